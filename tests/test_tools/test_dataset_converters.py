"""XML -> DOTA txt converters: library and CLI, round trip through the datasets."""
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest

from bhcl.datasets import AnnotationError, FAIR1MDataset, ShipRSImageNetDataset
from bhcl.datasets.convert import place_images, xml_to_dota_dir, xml_to_dota_file
from bhcl.datasets.formats import RawObject, fair1m_xml_string, read_fair1m_xml
from bhcl.structures import LabelTree
from tests.conftest import DATA_DIR, load_script, tree_config


def converter(name):
    return load_script(f'tools/dataset_converters/{name}.py')


def write_image(path, size=(200, 200)):
    assert cv2.imwrite(str(path), np.full((size[1], size[0], 3), 90, dtype=np.uint8))


def make_voc(root):
    for d in ('JPEGImages', 'Annotations', 'ImageSets'):
        (root / d).mkdir(parents=True)
    for stem in ('000001', '000002'):
        shutil.copy(osp.join(DATA_DIR, 'shiprs_voc', f'{stem}.xml'), root / 'Annotations')
        write_image(root / 'JPEGImages' / f'{stem}.bmp')
    (root / 'ImageSets' / 'train.txt').write_text('000002.bmp\n')
    (root / 'ImageSets' / 'val.txt').write_text('000001.bmp\n')


def instances(ds):
    return {ds.get_data_info(i)['img_id']: [
        (inst['bbox'], inst['bbox_label'], inst['difficulty'])
        for inst in ds.get_data_info(i)['instances']] for i in range(len(ds))}


def test_shiprs_cli_round_trip(tmp_path, capsys):
    voc, out = tmp_path / 'VOC_Format', tmp_path / 'dota'
    make_voc(voc)
    converter('shiprs_voc_to_dota').main([str(voc), str(out)])
    printed = capsys.readouterr().out
    assert 'train: files=1, ignored:Dock=1, images=1, objects=5' in printed
    assert 'val: files=1, images=1, objects=1' in printed
    lines = (out / 'train' / 'labelTxt' / '000002.txt').read_text().splitlines()
    assert lines[1] == '100.00 20.00 160.00 20.00 160.00 40.00 100.00 40.00 Other Warship 1'
    assert not any('Dock' in line for line in lines)
    assert osp.islink(out / 'train' / 'images' / '000002.bmp')
    assert sorted(os.listdir(out / 'val' / 'images')) == ['000001.bmp']
    for split in ('train', 'val'):
        from_txt = ShipRSImageNetDataset(data_root=str(out), ann_file=f'{split}/labelTxt/',
                                         data_prefix=dict(img_path=f'{split}/images/'))
        from_xml = ShipRSImageNetDataset(
            data_root=str(voc), ann_file=f'ImageSets/{split}.txt',
            data_prefix=dict(img_path='JPEGImages/', xml_path='Annotations/'))
        assert instances(from_txt) == instances(from_xml)
        assert instances(from_txt)


def test_shiprs_cli_counts_level_mismatch_and_copies(tmp_path, capsys):
    voc, out = tmp_path / 'VOC_Format', tmp_path / 'dota'
    make_voc(voc)
    xml = voc / 'Annotations' / '000002.xml'
    xml.write_text(xml.read_text().replace('<level_2>5</level_2>', '<level_2>4</level_2>'))
    converter('shiprs_voc_to_dota').main([str(voc), str(out), '--splits', 'train',
                                          '--images', 'copy'])
    assert 'level_mismatch=1' in capsys.readouterr().out
    assert not osp.islink(out / 'train' / 'images' / '000002.bmp')
    converter('shiprs_voc_to_dota').main([str(voc), str(tmp_path / 'o2'), '--splits', 'train',
                                          '--levels', 'none'])
    assert 'level_mismatch' not in capsys.readouterr().out


def test_shiprs_cli_bad_input(tmp_path):
    voc = tmp_path / 'VOC_Format'
    make_voc(voc)
    (voc / 'ImageSets' / 'train.txt').write_text('000002.bmp\n000009.bmp\n')
    tool = converter('shiprs_voc_to_dota')
    with pytest.raises(FileNotFoundError, match=r"000009.xml: no annotation for image '000009'"):
        tool.main([str(voc), str(tmp_path / 'a'), '--splits', 'train'])
    (voc / 'ImageSets' / 'train.txt').write_text('000002.bmp\n')
    xml = voc / 'Annotations' / '000002.xml'
    xml.write_text(xml.read_text().replace('<name>Fishing Vessel</name>', '<name>Fish</name>'))
    with pytest.raises(AnnotationError, match=r"000002.xml: object #4 \('Fish'\): unknown"):
        tool.main([str(voc), str(tmp_path / 'b'), '--splits', 'train'])
    tool.main([str(voc), str(tmp_path / 'c'), '--splits', 'train', '--skip-invalid'])
    lines = (tmp_path / 'c' / 'train' / 'labelTxt' / '000002.txt').read_text().splitlines()
    assert len(lines) == 4
    (voc / 'JPEGImages' / '000002.bmp').unlink()
    with pytest.raises(FileNotFoundError, match=r"000002.xml: image '000002': found no file"):
        tool.main([str(voc), str(tmp_path / 'd'), '--splits', 'train'])
    assert not (tmp_path / 'd').exists()
    tool.main([str(voc), str(tmp_path / 'e'), '--splits', 'train', '--skip-invalid'])
    assert not (tmp_path / 'e' / 'train' / 'labelTxt').exists()   # the image was skipped


def fair1m_fixture(tmp_path):
    """Official XML with fractional corners, images written next to it."""
    xml_dir, img_dir = tmp_path / 'labelXml', tmp_path / 'images'
    xml_dir.mkdir()
    img_dir.mkdir()
    objs = [RawObject(poly=[10.125, 11.5, 52.25, 12.75, 51.5, 30.0, 9.375, 28.5],
                      name='Small Car'),
            RawObject(poly=[100, 100, 160, 100, 160, 160, 100, 160], name='other-airplane'),
            RawObject(poly=[200, 200, 260, 205, 258, 225, 198, 220], name='Dry Cargo Ship')]
    (xml_dir / '12.xml').write_text(fair1m_xml_string('12.tif', objs, 300, 300))
    shutil.copy(osp.join(DATA_DIR, 'fair1m_xml', '1.xml'), xml_dir / '1.xml')
    for stem in ('1', '12'):
        write_image(img_dir / f'{stem}.tif', (300, 300))
    return xml_dir, img_dir


@pytest.mark.parametrize('underscores', [False, True])
def test_fair1m_cli_round_trip(tmp_path, capsys, underscores):
    xml_dir, _ = fair1m_fixture(tmp_path)
    out = tmp_path / 'labelTxt'
    converter('fair1m_xml_to_dota').main(
        [str(xml_dir), '--out-dir', str(out)] + (['--underscores'] if underscores else []))
    assert 'files=2, objects=5' in capsys.readouterr().out
    text = (out / '12.txt').read_text()
    name = 'Dry_Cargo_Ship' if underscores else 'Dry Cargo Ship'
    assert text.splitlines()[2] == (
        f'200.00 200.00 260.00 205.00 258.00 225.00 198.00 220.00 {name} 0')
    from_txt = FAIR1MDataset(data_root=str(tmp_path), ann_file='labelTxt/',
                             data_prefix=dict(img_path='images/'))
    from_xml = FAIR1MDataset(data_root=str(tmp_path), ann_file='labelXml/',
                             data_prefix=dict(img_path='images/'))
    a, b = instances(from_txt), instances(from_xml)
    assert a.keys() == b.keys() == {'1', '12'}
    for img in a:
        assert [x[1:] for x in a[img]] == [x[1:] for x in b[img]]
        np.testing.assert_allclose([x[0] for x in a[img]], [x[0] for x in b[img]], atol=0.005)
    classes = from_txt.metainfo['classes']
    assert [classes[x[1]] for x in a['12']] == ['Small Car', 'Airplane', 'Dry Cargo Ship']


def test_fair1m_cli_several_folders_and_collisions(tmp_path, capsys):
    xml_dir, _ = fair1m_fixture(tmp_path)
    other = tmp_path / 'part2'
    other.mkdir()
    shutil.copy(osp.join(DATA_DIR, 'fair1m_xml', '0.xml'), other / '0.xml')
    tool = converter('fair1m_xml_to_dota')
    tool.main([str(xml_dir), str(other), '--out-dir', str(tmp_path / 'out')])
    assert sorted(os.listdir(tmp_path / 'out')) == ['0.txt', '1.txt', '12.txt']
    shutil.copy(xml_dir / '1.xml', other / '1.xml')
    with pytest.raises(SystemExit, match='1.xml is in both'):
        tool.main([str(xml_dir), str(other), '--out-dir', str(tmp_path / 'out2')])


def test_fair1m_converter_bad_input(tmp_path):
    xml_dir, _ = fair1m_fixture(tmp_path)
    tree = LabelTree.from_config(tree_config('fair1m'))
    xml = xml_dir / '1.xml'
    xml.write_text(xml.read_text().replace('<point>30.000000,10.000000</point>', ''))
    xml_to_dota_file(str(xml), str(tmp_path / 'ok.txt'), read_fair1m_xml, tree)  # 4 points left
    assert len((tmp_path / 'ok.txt').read_text().splitlines()) == 2
    xml.write_text(xml.read_text().replace('<point>30.000000,20.000000</point>', ''))
    with pytest.raises(AnnotationError, match=r"1.xml: object #0 \('Small Car'\): 3 <point>"):
        xml_to_dota_dir(str(xml_dir), str(tmp_path / 'out'), read_fair1m_xml, tree)
    xml.write_text('<annotation><objects>')
    with pytest.raises(AnnotationError, match='1.xml: malformed XML'):
        xml_to_dota_dir(str(xml_dir), str(tmp_path / 'out'), read_fair1m_xml, tree)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        xml_to_dota_dir(str(tmp_path / 'nope'), str(tmp_path / 'out'), read_fair1m_xml, tree)


def test_place_images_needs_exactly_one_image(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    write_image(src / 'a b.bmp', (8, 8))
    write_image(src / 'c.png', (8, 8))
    write_image(src / 'c.bmp', (8, 8))
    assert place_images(['a b'], str(src), str(tmp_path / 'dst'))['images'] == 1
    assert osp.islink(tmp_path / 'dst' / 'a b.bmp')
    with pytest.raises(FileNotFoundError, match=r"image 'c': found \['c.bmp', 'c.png'\]|"
                                                r"image 'c': found \['c.png', 'c.bmp'\]"):
        place_images(['c'], str(src), str(tmp_path / 'dst'))
