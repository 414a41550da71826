"""bhcl.utils.machine: what a measurement ran on."""
import torch

from bhcl.utils.machine import cpu_model, machine_record


def test_cpu_model_reads_the_model_name_line(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nvendor_id\t: GenuineIntel\n'
                    'model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2\n\n'
                    'processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n')
    assert cpu_model(str(info)) == 'Intel(R) Xeon(R) Processor'


def test_cpu_model_falls_back_without_a_model_name(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nCPU implementer\t: 0x41\n')   # as on some ARM boards
    assert cpu_model(str(info)) not in ('', None)
    assert cpu_model(str(tmp_path / 'missing')) not in ('', None)


def test_machine_record_names_the_cpu_and_torch():
    rec = machine_record()
    assert rec['torch'] == torch.__version__
    assert rec['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    assert rec['cpu'] == cpu_model()
