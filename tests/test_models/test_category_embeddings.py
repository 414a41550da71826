"""Category-query initialisation from a user's embeddings file, and the tool that writes one."""
import json
import os.path as osp
import sys

import pytest
import torch

from bhcl.models.layers import CategoryEmbeddingsError, load_category_embeddings
from bhcl.structures import LabelTree
from tests.conftest import REPO_ROOT, load_script, tree_config

TREE = LabelTree.from_config(tree_config('shiprs'))
NAMES = list(TREE.classes)
TREE_CONFIG = osp.join(REPO_ROOT, 'configs/_base_/datasets/shiprs_label_tree.py')


def _write(path, names, emb):
    torch.save(dict(categories=names, embeddings=emb), path)
    return str(path)


def test_rows_are_matched_by_name(tmp_path):
    emb = torch.randn(len(NAMES), 6)
    order = torch.randperm(len(NAMES))
    path = _write(tmp_path / 'e.pt', [NAMES[i] for i in order.tolist()], emb[order])
    out = load_category_embeddings(path, NAMES, dims=6)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, emb)


@pytest.mark.parametrize('case, match', [
    ('missing', r"e\.pt does not match .*missing nodes of the label tree: 'Ship'"),
    ('extra', r"names that are not nodes of the tree: 'Harbour'"),
    ('dims', r'e\.pt: embeddings have dimension 6, the category queries 8'),
    ('duplicate', r"e\.pt: duplicate category names: 'Ship'"),
    ('rows', r'e\.pt: "embeddings" must be \(49, D\)'),
    ('keys', r'e\.pt: expected a dict with keys "categories"'),
    ('nan', r'e\.pt: embeddings contain NaN'),
])
def test_errors_name_the_file_and_what_does_not_fit(tmp_path, case, match):
    names, emb = list(NAMES), torch.randn(len(NAMES), 6)
    if case == 'missing':
        names, emb = names[1:], emb[1:]
    elif case == 'extra':
        names, emb = names + ['Harbour'], torch.randn(len(NAMES) + 1, 6)
    elif case == 'duplicate':
        names[1] = 'Ship'
    elif case == 'rows':
        emb = emb[:-1]
    elif case == 'nan':
        emb[3, 2] = float('nan')
    path = str(tmp_path / 'e.pt')
    if case == 'keys':
        torch.save(dict(names=names, vectors=emb), path)
    else:
        _write(path, names, emb)
    with pytest.raises(CategoryEmbeddingsError, match=match):
        load_category_embeddings(path, NAMES, dims=8 if case == 'dims' else 6)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(CategoryEmbeddingsError, match='tools/misc/category_embeddings.py'):
        load_category_embeddings(str(tmp_path / 'none.pt'), NAMES)


STUB = '''
import torch

def encode(texts):
    # a deterministic 5-d "text encoder": character statistics of each text
    return torch.tensor([[len(t), t.count('a'), t.count('e'), t.count(' '), sum(map(ord, t)) % 97]
                         for t in texts], dtype=torch.float64)
'''


@pytest.fixture
def stub_encoder(tmp_path, monkeypatch):
    (tmp_path / 'stub_text_encoder.py').write_text(STUB)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield 'stub_text_encoder:encode'
    sys.modules.pop('stub_text_encoder', None)


@pytest.mark.parametrize('text', ['name', 'path'])
def test_tool_writes_a_file_the_loader_reads(tmp_path, stub_encoder, text):
    tool = load_script('tools/misc/category_embeddings.py')
    out = str(tmp_path / 'shiprs.pt')
    tool.main([TREE_CONFIG, out, '--encoder', stub_encoder,
               '--template', 'a satellite image of a {}.', '--text', text])
    emb = load_category_embeddings(out, NAMES, dims=5)
    texts = [f'a satellite image of a {n if text == "name" else " ".join(TREE.path(k))}.'
             for k, n in enumerate(NAMES)]
    want = torch.nn.functional.normalize(sys.modules['stub_text_encoder'].encode(texts), dim=1)
    torch.testing.assert_close(emb, want.float())
    assert torch.load(out)['texts'] == texts


def test_tool_errors(tmp_path, stub_encoder, monkeypatch):
    tool = load_script('tools/misc/category_embeddings.py')
    tree = TREE_CONFIG
    out = str(tmp_path / 'e.pt')
    with pytest.raises(SystemExit, match='has no function nope'):
        tool.main([tree, out, '--encoder', 'stub_text_encoder:nope'])
    with pytest.raises(SystemExit, match='must contain'):
        tool.main([tree, out, '--encoder', stub_encoder, '--template', 'a ship'])
    monkeypatch.setitem(sys.modules, 'open_clip', None)
    with pytest.raises(SystemExit, match='needs the open_clip_torch package'):
        tool.main([tree, out, '--encoder', 'open_clip:ViT-B-32:openai'])
    with pytest.raises(SystemExit, match='one vector per text'):
        tool.write_embeddings(TREE, lambda texts: torch.zeros(3, 2), out)


def test_tool_reads_a_tree_json(tmp_path, stub_encoder):
    tool = load_script('tools/misc/category_embeddings.py')
    nodes = [dict(name=n, path=TREE.path(k), index=k) for k, n in enumerate(NAMES)]
    tree_json = tmp_path / 'tree.json'
    tree_json.write_text(json.dumps(dict(nodes=nodes)))
    out = str(tmp_path / 'e.pt')
    tool.main([str(tree_json), out, '--encoder', stub_encoder, '--no-normalize'])
    emb = load_category_embeddings(out, NAMES)
    torch.testing.assert_close(emb, sys.modules['stub_text_encoder'].encode(NAMES).float())
