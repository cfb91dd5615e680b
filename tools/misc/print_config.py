"""Print a config as the tools run it.

    python tools/misc/print_config.py CONFIG [--cfg-options KEY=VALUE ...]

Prints the merged config - ``_base_`` files inherited, ``--cfg-options``
applied in the same way as ``tools/train.py`` and ``tools/test.py`` apply
them - in config syntax, e.g. to see what a derived config or an override
changes before a long run.
"""
import argparse

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Print the merged config')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. train_cfg.max_epochs=2')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    print(f'Config: {args.config}\n{cfg.pretty_text}')
    return cfg


if __name__ == '__main__':
    main()
