"""tools/train.py and tools/test.py turn their command line into the config
they run."""
import os.path as osp
import runpy

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')


def _merged(tool, argv):
    script = runpy.run_path(osp.join(ROOT, 'tools', f'{tool}.py'))
    args = script['parse_args'](argv)
    return script['merge_args'](Config.fromfile(args.config), args)


def test_options_on_parts_the_tool_drops_are_accepted():
    """--cfg-options naming the training parts that tools/test.py drops, or
    the validation parts that --no-validate drops, crashed in mmengine's
    merge (a TypeError on None); the options now apply first."""
    cfg = _merged('test', [
        CONFIG, 'ckpt.pth', '--cfg-options', 'train_dataloader.num_workers=0',
        'test_dataloader.batch_size=4'
    ])
    assert cfg.train_dataloader is None and cfg.optim_wrapper is None
    assert cfg.test_dataloader.batch_size == 4
    assert cfg.load_from == 'ckpt.pth'
    cfg = _merged('train', [
        CONFIG, '--no-validate', '--cfg-options',
        'val_dataloader.num_workers=0', 'train_cfg.max_epochs=3'
    ])
    assert cfg.val_dataloader is None and cfg.val_cfg is None
    assert cfg.train_cfg.max_epochs == 3


def test_flags_override_options_on_the_same_key():
    cfg = _merged('train', [
        CONFIG, '--work-dir', 'flag_dir', '--cfg-options',
        'work_dir=option_dir'
    ])
    assert cfg.work_dir == 'flag_dir'
    cfg = _merged('train', [CONFIG, '--resume'])
    assert cfg.resume is True and cfg.load_from is None
