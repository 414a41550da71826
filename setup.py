import os.path as osp

from setuptools import find_packages, setup


def read_version():
    ns = {}
    with open(osp.join(osp.dirname(__file__), 'bhcl', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def read_requirements(name):
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip() and not line.startswith('-r')]


setup(
    name='bhcl',
    version=read_version(),
    description='Balanced hierarchical contrastive learning for fine-grained '
    'oriented object detection (OpenMMLab plugin)',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['bhcl', 'bhcl.*']),
    include_package_data=True,
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    zip_safe=False,
)
