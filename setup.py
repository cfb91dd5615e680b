import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

ROOT = osp.dirname(osp.abspath(__file__))
# What `mim train/test mmcc CONFIG` looks for under <package>/.mim/.
MIM_ITEMS = ('tools', 'configs', 'model-index.yml')


def read_requirements(path):
    """Requirement lines of a file, comments and blanks dropped."""
    with open(path) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith('-r')]


def add_mim_extension(mim_path, mode):
    """Put ``tools/``, ``configs/`` (and ``model-index.yml`` when there is
    one) of the checkout into ``mim_path``, as MIM expects them in
    ``<package>/.mim``.

    Args:
        mim_path (str): The ``.mim`` folder to fill.
        mode (str): ``'symlink'`` (relative links to the checkout, for an
            editable install) or ``'copy'`` (for a wheel).
    """
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_ITEMS:
        src, dst = osp.join(ROOT, name), osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if not osp.exists(src):
            continue
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(
                src,
                dst,
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


class BuildPyWithMim(build_py):
    """``build_py`` that also provides ``mmcc/.mim``.

    A wheel (``pip wheel .``, ``pip install .``, ``python -m build``) gets
    copies inside the built package, so the checkout is left as it is. An
    editable install (``pip install -e .``: PEP 660, through setuptools'
    ``editable_wheel``, which runs this command with ``editable_mode``)
    gets symlinks in the checkout's ``mmcc/.mim`` (git-ignored).
    """

    def run(self):
        super().run()
        if self.editable_mode:
            add_mim_extension(osp.join(ROOT, 'mmcc', '.mim'), 'symlink')
        else:
            add_mim_extension(osp.join(self.build_lib, 'mmcc', '.mim'), 'copy')


class DevelopWithMim(develop):
    """``develop`` (``pip install --no-use-pep517 -e .``, what ``make
    setup`` runs) that links ``mmcc/.mim`` to the checkout.

    mim finds a package's tools at ``<distribution location>/mmcc/.mim``.
    This install's location is the checkout (an egg-link), so mim reaches
    the linked tools there; a PEP 660 editable install's location is
    site-packages, where mmcc has no folder, and mim cannot find it.
    """

    def run(self):
        add_mim_extension(osp.join(ROOT, 'mmcc', '.mim'), 'symlink')
        super().run()


if __name__ == '__main__':
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
        cmdclass={
            'build_py': BuildPyWithMim,
            'develop': DevelopWithMim
        },
        python_requires='>=3.8',
        license='Apache License 2.0',
        install_requires=read_requirements('requirements/runtime.txt'),
        extras_require={
            'optional': read_requirements('requirements/optional.txt'),
            'tests': read_requirements('requirements/tests.txt'),
            'mim': read_requirements('requirements/mminstall.txt'),
        },
        zip_safe=False)
