"""Train a config and write a per-epoch report of the run.

    python tools/analysis_tools/train_and_report.py CONFIG --work-dir DIR \
        [--cfg-options ...]

Runs ``tools/train.py`` with the same Python, keeps its whole log in
``DIR/train.log`` and then writes ``DIR/report.json`` and ``DIR/report.txt``:
for every epoch, the wall-clock minutes since the start, the pseudo-label
statistics the PseudoLabelHook logged (clusters, outliers, NMI/ARI against
the true identities) and, where the epoch was evaluated, mAP/CMC/mINP;
and plots them into ``DIR/curves`` (``plot_curves.py``).
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import runpy
import subprocess
import sys
import time
from datetime import datetime

TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
LOG_TIME = re.compile(r'^(\d\d/\d\d \d\d:\d\d:\d\d) - mmengine')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--cfg-options', nargs='+', default=[])
    return parser.parse_args()


def read_scalars(work_dir):
    """The newest run's ``vis_data/scalars.json`` lines, as dicts."""
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def epoch_end_times(log_lines, start):
    """Minutes from ``start`` at which each epoch's pseudo-labels and each
    evaluation were logged, keyed by (kind, epoch)."""
    times, epoch = {}, 0
    year = datetime.fromtimestamp(start).year
    for line in log_lines:
        match = LOG_TIME.match(line)
        if not match:
            continue
        stamp = datetime.strptime(f'{year}/{match.group(1)}',
                                  '%Y/%m/%d %H:%M:%S').timestamp()
        minutes = round((stamp - start) / 60, 2)
        if 'Pseudo-labels:' in line:
            times[('pseudo', epoch)] = minutes
            epoch += 1
        val = re.search(r'Epoch\(val\) \[(\d+)\]\[\d+/\d+\]\s+reid/', line)
        if val:
            times[('val', int(val.group(1)))] = minutes
    return times


def main():
    args = parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    log_path = osp.join(args.work_dir, 'train.log')
    cmd = [
        sys.executable,
        osp.join(TOOLS, 'train.py'), args.config, '--work-dir', args.work_dir
    ]
    if args.cfg_options:
        cmd += ['--cfg-options'] + args.cfg_options
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
    total = (time.time() - start) / 60

    with open(log_path) as f:
        times = epoch_end_times(f.readlines(), start)
    epochs = {}
    for entry in read_scalars(args.work_dir):
        pseudo = {
            k[len('pseudo/'):]: v
            for k, v in entry.items() if k.startswith('pseudo/')
        }
        if pseudo:
            epoch = entry['step']  # logged before training epoch `step`
            epochs.setdefault(epoch + 1, {}).update(
                pseudo, minutes_at_clustering=times.get(('pseudo', epoch)))
        metrics = {k: v for k, v in entry.items() if k.startswith('reid/')}
        if metrics:
            epochs.setdefault(entry['step'], {}).update(
                metrics, minutes_at_eval=times.get(('val', entry['step'])))
    report = dict(
        config=args.config,
        exit_code=code,
        total_minutes=round(total, 2),
        epochs={str(k): epochs[k]
                for k in sorted(epochs)})
    with open(osp.join(args.work_dir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=2)

    lines = [
        f'{args.config}: {total:.1f} min, exit code {code}',
        f'{"epoch":>5} {"min":>6} {"clusters":>8} {"outliers":>8} '
        f'{"NMI":>6} {"ARI":>6} {"NMIall":>6} {"ARIall":>6} {"mAP":>6} '
        f'{"top1":>6} {"eval@min":>8}'
    ]
    for epoch in sorted(epochs):
        e = epochs[epoch]

        def fmt(key, scale=1.0, width=6):
            value = e.get(key)
            return f'{value * scale:{width}.3f}' if isinstance(
                value, float) else f'{"-":>{width}}'

        lines.append(
            f'{epoch:5d} {fmt("minutes_at_clustering", width=6)} '
            f'{e.get("num_clusters", "-"):>8} {e.get("num_outliers", "-"):>8} '
            f'{fmt("nmi")} {fmt("ari")} {fmt("nmi_all")} {fmt("ari_all")} '
            f'{fmt("reid/mAP")} {fmt("reid/top1")} '
            f'{fmt("minutes_at_eval", width=8)}')
    text = '\n'.join(lines)
    with open(osp.join(args.work_dir, 'report.txt'), 'w') as f:
        f.write(text + '\n')
    print(text)
    try:
        files = runpy.run_path(
            osp.join(osp.dirname(osp.abspath(__file__)),
                     'plot_curves.py'))['plot_work_dir'](
                         args.work_dir)
        print('Curves: ' + (', '.join(files) or 'nothing logged to plot'))
    except Exception as error:  # the report stands without its pictures
        print(f'Curves not plotted: {error!r}')
    sys.exit(code)


if __name__ == '__main__':
    main()
