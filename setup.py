import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup


def read_requirements(path):
    """Requirement lines of a file, comments and blanks dropped."""
    with open(path) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith('-r')]


def add_mim_extension():
    """Expose tools/ and configs/ inside the package as ``mmcc/.mim`` so that
    ``mim train mmcc CONFIG`` and ``mim test`` find them. Editable installs get
    symlinks, regular installs get copies."""
    if 'develop' in sys.argv or any('editable' in a for a in sys.argv):
        mode = 'symlink'
    elif any(a in sys.argv for a in ('sdist', 'bdist_wheel', 'install')):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(root, 'mmcc', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in ('tools', 'configs'):
        src, dst = osp.join(root, name), osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        else:
            shutil.copytree(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    version = {}
    with open(osp.join('mmcc', 'version.py')) as f:
        exec(f.read(), version)
    setup(
        name='mmcc',
        version=version['__version__'],
        description='Cluster Contrast for unsupervised object re-ID, '
        'as an OpenMMLab plugin',
        long_description=open('README.md').read(),
        long_description_content_type='text/markdown',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        include_package_data=True,
        package_data={'mmcc': ['.mim/configs/**/*', '.mim/tools/**/*']},
        python_requires='>=3.8',
        license='Apache License 2.0',
        install_requires=read_requirements('requirements/runtime.txt'),
        extras_require={
            'optional': read_requirements('requirements/optional.txt'),
            'tests': read_requirements('requirements/tests.txt'),
            'mim': read_requirements('requirements/mminstall.txt'),
        },
        zip_safe=False)
