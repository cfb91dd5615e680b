"""Plot a run's pseudo-labels and re-ID accuracy per epoch, as PNGs.

    python tools/analysis_tools/plot_curves.py WORK_DIR [--out DIR]

Reads ``WORK_DIR/report.json`` when ``train_and_report.py`` wrote one, else
the run's own records: mmengine's ``WORK_DIR/<timestamp>/vis_data/
scalars.json`` for the values and ``<timestamp>.log`` for the wall-clock
minutes (every timestamped folder in order, so that a resumed run is whole;
minutes then count the time spent running, not the pauses). Writes into
``DIR`` (default ``WORK_DIR/curves``):

- ``pseudo_labels.png``: clusters, outliers, and the NMI/ARI of the
  pseudo-labels against the true identities, against the epoch trained on
  them (dashed: the "all" variants, outliers counted as one cluster);
- ``reid_accuracy.png``: mAP and top-1 against the epoch and against the
  minutes since the start of the run.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
from datetime import datetime

RUN_FOLDER = re.compile(r'^\d{8}_\d{6}$')
# mmengine's log lines: '2024/06/01 12:00:00 - mmengine' in the log file,
# '06/01 12:00:00 - mmengine' on the console (train_and_report's train.log)
LOG_TIME = re.compile(r'^(\d{4}/)?(\d\d/\d\d \d\d:\d\d:\d\d) - mmengine')
VAL_LINE = re.compile(r'Epoch\(val\) \[(\d+)\]\[\d+/\d+\]\s+reid/')


def _log_times(log_path, start, offset):
    """Minutes of each 'Pseudo-labels:' line (in order), of each epoch's
    evaluation, and of the last line of an mmengine log."""
    pseudo, val, last = [], {}, offset
    if not osp.isfile(log_path):
        return pseudo, val, None
    year = datetime.fromtimestamp(start).year
    with open(log_path, errors='replace') as f:
        for line in f:
            match = LOG_TIME.match(line)
            if not match:
                continue
            stamp = datetime.strptime(
                (match.group(1) or f'{year}/') + match.group(2),
                '%Y/%m/%d %H:%M:%S').timestamp()
            last = round(offset + (stamp - start) / 60, 2)
            if 'Pseudo-labels:' in line:
                pseudo.append(last)
            found = VAL_LINE.search(line)
            if found:
                val[int(found.group(1))] = last
    return pseudo, val, last


def epochs_from_scalars(work_dir):
    """{epoch: values} from every timestamped run folder of ``work_dir``.

    Pseudo-label statistics logged at step ``s`` (before training epoch
    ``s``, 0-based) belong to epoch ``s + 1``; an evaluation logged at step
    ``e`` to epoch ``e``. Later folders (a resumed run) override earlier
    ones.
    """
    epochs, offset = {}, 0.0
    folders = sorted(
        name for name in os.listdir(work_dir) if RUN_FOLDER.match(name)
        and osp.isfile(osp.join(work_dir, name, 'vis_data', 'scalars.json')))
    for name in folders:
        start = datetime.strptime(name, '%Y%m%d_%H%M%S').timestamp()
        pseudo_times, val_times, end = _log_times(
            osp.join(work_dir, name, f'{name}.log'), start, offset)
        num_pseudo = 0
        with open(osp.join(work_dir, name, 'vis_data', 'scalars.json')) as f:
            entries = [json.loads(line) for line in f if line.strip()]
        for entry in entries:
            pseudo = {
                k[len('pseudo/'):]: v
                for k, v in entry.items() if k.startswith('pseudo/')
            }
            if pseudo:
                if num_pseudo < len(pseudo_times):
                    pseudo['minutes_at_clustering'] = pseudo_times[num_pseudo]
                num_pseudo += 1
                epochs.setdefault(entry['step'] + 1, {}).update(pseudo)
            metrics = {k: v for k, v in entry.items() if k.startswith('reid/')}
            if metrics:
                if entry['step'] in val_times:
                    metrics['minutes_at_eval'] = val_times[entry['step']]
                epochs.setdefault(entry['step'], {}).update(metrics)
        if end is not None:
            offset = end
    return epochs


def load_epochs(work_dir):
    """{epoch: values} of a run: its report.json, or its mmengine records.

    Values use report.json's names: ``num_clusters``, ``num_outliers``,
    ``nmi``, ``ari``, ``nmi_all``, ``ari_all``, ``minutes_at_clustering``,
    ``reid/mAP``, ``reid/top1``..., ``minutes_at_eval``.
    """
    report = osp.join(work_dir, 'report.json')
    if osp.isfile(report):
        with open(report) as f:
            return {int(k): v for k, v in json.load(f)['epochs'].items()}
    return epochs_from_scalars(work_dir)


def _series(epochs, key, x_key=None):
    """(xs, ys) of the epochs that have ``key`` (and ``x_key``)."""
    points = [(e if x_key is None else v[x_key], v[key])
              for e, v in sorted(epochs.items())
              if isinstance(v.get(key), (int, float)) and (
                  x_key is None or isinstance(v.get(x_key), (int, float)))]
    return [p[0] for p in points], [p[1] for p in points]


def _plot(ax, epochs, keys, x_key=None, styles=None):
    """Draw ``keys`` on ``ax``; whether anything was drawn."""
    drawn = False
    for i, (key, label) in enumerate(keys):
        xs, ys = _series(epochs, key, x_key)
        if xs:
            style = styles[i] if styles else 'o-'
            ax.plot(xs, ys, style, label=label, markersize=4)
            drawn = True
    if drawn:
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            'not logged',
            ha='center',
            va='center',
            transform=ax.transAxes,
            color='gray')
    return drawn


def _integer_ticks(ax, which):
    """Integer ticks on an axis of counts, even around a single value."""
    from matplotlib.ticker import MaxNLocator
    get, set_, axis = ((ax.get_xlim, ax.set_xlim,
                        ax.xaxis) if which == 'x' else
                       (ax.get_ylim, ax.set_ylim, ax.yaxis))
    low, high = get()
    if high - low < 2:  # e.g. a single epoch: room for integers around it
        middle = round((low + high) / 2)
        # counts and epochs are never negative
        set_(max(middle - 1, 0), max(middle + 1, 2))
    axis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(epochs, out_dir, title=''):
    """Write the curves of an epoch table as PNGs into ``out_dir``.

    Args:
        epochs (dict[int, dict]): What :func:`load_epochs` returns.
        out_dir (str): Folder of the PNGs, created if needed.
        title (str): Title of the figures, e.g. the run's name.

    Returns:
        list[str]: The PNGs written: ``pseudo_labels.png`` if any
        pseudo-label statistics were logged, ``reid_accuracy.png`` if any
        evaluation was.
    """
    from matplotlib.figure import Figure
    os.makedirs(out_dir, exist_ok=True)
    files = []

    if any('num_clusters' in v for v in epochs.values()):
        fig = Figure(figsize=(13, 3.8), layout='constrained')
        axes = fig.subplots(1, 3)
        _plot(axes[0], epochs, [('num_clusters', 'clusters')])
        axes[0].set_title('clusters')
        _plot(axes[1], epochs, [('num_outliers', 'outliers')])
        axes[1].set_title('outliers (unclustered images)')
        _plot(
            axes[2],
            epochs, [('nmi', 'NMI'), ('ari', 'ARI'), ('nmi_all', 'NMI all'),
                     ('ari_all', 'ARI all')],
            styles=['o-', 's-', 'o--', 's--'])
        axes[2].set_title('pseudo-labels vs true identities')
        axes[2].set_ylim(-0.05, 1.05)
        for ax in axes:
            ax.set_xlabel('epoch')
            _integer_ticks(ax, 'x')
        for ax in axes[:2]:
            _integer_ticks(ax, 'y')
        fig.suptitle(f'{title} pseudo-labels'.strip())
        files.append(osp.join(out_dir, 'pseudo_labels.png'))
        fig.savefig(files[-1], dpi=100)

    if any('reid/mAP' in v for v in epochs.values()):
        fig = Figure(figsize=(10, 3.8), layout='constrained')
        axes = fig.subplots(1, 2, sharey=True)
        keys = [('reid/mAP', 'mAP'), ('reid/top1', 'top-1')]
        _plot(axes[0], epochs, keys)
        axes[0].set_xlabel('epoch')
        _integer_ticks(axes[0], 'x')
        axes[0].set_ylabel('%')
        _plot(axes[1], epochs, keys, x_key='minutes_at_eval')
        axes[1].set_xlabel('minutes since the start')
        fig.suptitle(f'{title} re-ID accuracy'.strip())
        files.append(osp.join(out_dir, 'reid_accuracy.png'))
        fig.savefig(files[-1], dpi=100)
    return files


def plot_work_dir(work_dir, out_dir=None):
    """Plot the run in ``work_dir`` into ``out_dir`` (``WORK_DIR/curves``).

    Returns:
        list[str]: The PNGs written (none if nothing was logged).
    """
    out_dir = out_dir or osp.join(work_dir, 'curves')
    name = osp.basename(osp.normpath(osp.abspath(work_dir)))
    return plot_curves(load_epochs(work_dir), out_dir, title=name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir', help='the training run\'s work dir')
    parser.add_argument(
        '--out', help='folder of the PNGs (default: WORK_DIR/curves)')
    args = parser.parse_args(argv)
    if not osp.isdir(args.work_dir):
        parser.error(f'{args.work_dir} is not a directory')
    files = plot_work_dir(args.work_dir, args.out)
    if not files:
        runs = glob.glob(osp.join(args.work_dir, '*', 'vis_data'))
        print(f'Nothing to plot in {args.work_dir}: no report.json and '
              f'{len(runs)} run folder(s) without pseudo-label or re-ID '
              'scalars')
        return files
    print('Curves: ' + ', '.join(files))
    return files


if __name__ == '__main__':
    main()
