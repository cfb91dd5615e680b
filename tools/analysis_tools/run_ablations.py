"""Run the ablation study, one arm after another, and write its report.

    python tools/analysis_tools/run_ablations.py [--arms main gem ...] \
        [--seeds 2 3] [--data-root ../shared/data/market1501-trainsplit/] \
        [--work-root work_dirs/ablations] [--out docs/ablations.md] \
        [--report-only]

Every arm is a config of ``configs/cluster_contrast/ablations/`` (see its
README): the market1501-trainsplit CPU recipe on a shared 12-epoch schedule,
varied in one thing. Each runs as ``tools/train.py CONFIG --work-dir
WORK_ROOT/ARM`` (console output in ``WORK_ROOT/ARM/console.log``); the main
arm runs again with each ``--seeds`` value (``WORK_ROOT/main-seedS``, via
``--cfg-options randomness.seed=S``). An arm whose records already hold the
evaluation of its last epoch is skipped, so the study resumes across
sessions; an arm stopped half-way is moved aside to
``WORK_ROOT/ARM.incomplete-<time>`` and run again from the start (its only
checkpoint is written at the end).

Every finished arm is also kept as a small record,
``<out without .md>/runs/ARM.json`` (``--records``): what the report shows of
it, the CPU it ran on and when. The records are meant to be committed with
the report: work directories are scratch and get lost, and an arm with a
finished record counts as finished (it is skipped and reported from its
record) until its work directory holds a finished run again.

After every arm, and with ``--report-only`` without running anything, the
report is written from whatever runs exist: ``--out`` (markdown) and its
curves in ``<out without .md>/`` (PNGs). The text between ``<!-- reading
-->`` and ``<!-- /reading -->`` of an existing report is kept. The run
records are read with ``plot_curves.py`` (per-epoch pseudo-label
statistics, evaluations and the minutes of each, from the logs' time
stamps) and ``train_and_report.py`` (the logged step times).
"""
import argparse
import datetime
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from plot_curves import _series, load_epochs  # noqa: E402
from train_and_report import read_scalars  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = 'configs/cluster_contrast/ablations'
DEFAULT_DATA_ROOT = '../shared/data/market1501-trainsplit/'
PRETRAINED = 'checkpoints/mobilenetv2_mmpretrain.pth'
LOADERS = ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
           'test_dataloader')
READING_START, READING_END = '<!-- reading -->', '<!-- /reading -->'
READING_PLACEHOLDER = (
    '_To be written: what these runs say about the paper\'s claims (the '
    'cluster memory against the instance memory, the momentum, the hard '
    'update, the clustering method, the batch layout), and what they '
    'cannot say at this scale._')

_STEM = 'cluster-contrast_mobilenetv2_{}-12e_market1501-trainsplit{}.py'


def _config(method='dbscan', batch='1xb128', suffix=''):
    return osp.join(CONFIG_DIR, _STEM.format(f'{method}_{batch}', suffix))


class Arm(NamedTuple):
    """One run of the study."""
    name: str  # also its work directory's name
    config: str  # relative to the project root
    group: str  # the question it answers; plotted with the main arm
    what: str  # how it differs from the main arm
    seed: Optional[int] = None  # None: the config's own
    label: Optional[str] = None  # its legend in the plots; default: what


MAIN = Arm(
    'main', _config(), 'main',
    'the CPU recipe: cluster memory, mean update, m 0.1, DBSCAN '
    'eps 0.5, avg pooling, 16x8, 128x64, frozen_stages 2')
ARMS = [
    MAIN,
    Arm('instance-memory', _config(suffix='_instance-memory'), 'memory',
        'instance memory (SpCL), m 0.2'),
    Arm('momentum-0', _config(suffix='_momentum-0'), 'momentum',
        'm 0 (no momentum)'),
    Arm('momentum-0.5', _config(suffix='_momentum-0.5'), 'momentum', 'm 0.5'),
    Arm('momentum-0.9', _config(suffix='_momentum-0.9'), 'momentum', 'm 0.9'),
    Arm('hard-update', _config('dbscan-hard'), 'update', 'hard update'),
    Arm('infomap', _config('infomap'), 'clustering',
        'Infomap (k1 15, k2 4, min_sim 0.5)'),
    Arm('hdbscan', _config('hdbscan'), 'clustering',
        'HDBSCAN (min_cluster_size 4)'),
    Arm('gem', _config(suffix='_gem'), 'pooling', 'GeM pooling (p 3)'),
    Arm('batch-8x8', _config(batch='1xb64', suffix='_8x8'), 'batch',
        'P x Z = 8 x 8'),
    Arm('batch-32x4', _config(suffix='_32x4'), 'batch', 'P x Z = 32 x 4'),
    Arm('input-256x128', _config(suffix='_256x128'), 'input', '256x128 input'),
    # 128x64 for about as many minutes as 256x128 takes for 12 epochs: the
    # issue asks to compare the input sizes at equal minutes
    Arm('input-128x64-36e',
        osp.join(
            CONFIG_DIR, 'cluster-contrast_mobilenetv2_dbscan_1xb128-36e_'
            'market1501-trainsplit_equal-minutes.py'),
        'input',
        '36 epochs, lr x0.1 from epoch 27 (128x64 for about the minutes '
        'of 256x128 at 12 epochs)',
        label='128x64, 36 epochs'),
    Arm('eps-0.6', _config(suffix='_eps-0.6'), 'eps', 'DBSCAN eps 0.6'),
    Arm('no-frozen-stages', _config(suffix='_no-frozen-stages'),
        'frozen stages', 'no frozen stages'),
]
# Panels of the curve plots, in order; each also draws the main arm.
GROUPS = ('memory', 'momentum', 'update', 'clustering', 'pooling', 'batch',
          'input', 'eps', 'frozen stages', 'seed')
MAIN_LABEL = dict(
    memory='cluster memory',
    momentum='m 0.1',
    update='mean update',
    clustering='DBSCAN',
    pooling='avg pooling',
    batch='16 x 8',
    input='128x64',
    eps='eps 0.5',
    seed='seed 1')
MAIN_LABEL['frozen stages'] = 'frozen_stages 2'


def seed_arm(seed: int) -> Arm:
    """The main arm again with another seed."""
    return MAIN._replace(
        name=f'main-seed{seed}',
        group='seed',
        what=f'the main arm with seed {seed}',
        seed=seed)


def study_arms(seeds=(2, 3)) -> List[Arm]:
    """Every arm of the study: the configs, then the main arm's seeds."""
    return ARMS + [seed_arm(s) for s in seeds]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--arms',
        nargs='+',
        metavar='ARM',
        help='run only these arms (default: all); names: ' +
        ', '.join(a.name for a in ARMS) + ', main-seedS')
    parser.add_argument(
        '--seeds',
        nargs='*',
        type=int,
        default=[2, 3],
        help='extra seeds of the main arm (default: 2 3; none: --seeds)')
    parser.add_argument(
        '--data-root',
        default=DEFAULT_DATA_ROOT,
        help='the market1501-trainsplit tree (default: %(default)s)')
    parser.add_argument(
        '--work-root',
        default='work_dirs/ablations',
        help='one work directory per arm under it (default: %(default)s)')
    parser.add_argument(
        '--out',
        default='docs/ablations.md',
        help='the report; its curves go to OUT without .md '
        '(default: %(default)s)')
    parser.add_argument(
        '--records',
        help='one JSON record per finished arm (default: OUT without .md, '
        'then runs/)')
    parser.add_argument(
        '--report-only',
        action='store_true',
        help='run nothing, only write the report from existing runs')
    args = parser.parse_args(argv)
    known = {a.name: a for a in study_arms(args.seeds)}
    for name in args.arms or []:
        match = re.fullmatch(r'main-seed(\d+)', name)
        if match and name not in known:
            known[name] = seed_arm(int(match.group(1)))
        if name not in known:
            parser.error(f'unknown arm {name!r}; arms: {", ".join(known)}')
    args.selected = [known[n] for n in args.arms] if args.arms else \
        list(known.values())
    args.all_arms = list(known.values())
    if args.records is None:
        args.records = osp.join(osp.splitext(args.out)[0], 'runs')
    return args


# --------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------
def schedule_of(config: str) -> dict:
    """The shared schedule, as the main arm's config sets it."""
    from mmengine.config import Config
    cfg = Config.fromfile(
        config if osp.isabs(config) else osp.join(ROOT, config))
    train = cfg.train_dataloader
    return dict(
        max_epochs=cfg.train_cfg.max_epochs,
        val_interval=cfg.train_cfg.val_interval,
        iters_per_epoch=train.sampler.iters_per_epoch,
        milestones=list(cfg.param_scheduler.milestones),
        lr=cfg.optim_wrapper.optimizer.lr,
        batch_size=train.batch_size,
        num_instances=train.sampler.num_instances,
        seed=cfg.randomness.seed)


def _has_records(work_dir: str) -> bool:
    return osp.isdir(work_dir) and any(
        osp.isdir(osp.join(work_dir, name, 'vis_data'))
        for name in os.listdir(work_dir))


def head_memory_bytes(checkpoint: str) -> Optional[int]:
    """Bytes of the training head's buffers in a checkpoint (its memory
    and per-sample labels), or None without a readable checkpoint."""
    if not osp.isfile(checkpoint):
        return None
    from mmcc.utils.checkpoint_safe_globals import safe_torch_load
    state = safe_torch_load(checkpoint, map_location='cpu')
    state = state.get('state_dict', state)
    return sum(value.numel() * value.element_size()
               for key, value in state.items() if key.startswith('head.'))


def final_checkpoint(work_dir: str, max_epochs: int) -> str:
    """The checkpoint of the last epoch, else the one last written."""
    path = osp.join(work_dir, f'epoch_{max_epochs}.pth')
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path) and osp.isfile(pointer):
        with open(pointer) as f:
            path = f.read().strip()
    return path


def summarise(work_dir: str, max_epochs: int) -> Optional[dict]:
    """What a run's records say, or None if it has none.

    Returns:
        dict: ``epochs`` ({epoch: values}, :func:`plot_curves.load_epochs`),
        ``finished`` (the last epoch was evaluated), ``mAP``/``top1`` and
        ``minutes`` at the last evaluation, ``step_time`` (median of the
        logged iteration times, data loading included, in s) and
        ``memory_bytes`` (:func:`head_memory_bytes`).
    """
    if not _has_records(work_dir):
        return None
    epochs = load_epochs(work_dir)
    evaluated = [e for e in sorted(epochs) if 'reid/mAP' in epochs[e]]
    last = epochs[evaluated[-1]] if evaluated else {}
    times = [
        entry['time'] for entry in read_scalars(work_dir)
        if 'loss' in entry and isinstance(entry.get('time'), (int, float))
    ]
    return dict(
        epochs=epochs,
        finished=bool(evaluated) and evaluated[-1] >= max_epochs,
        last_eval_epoch=evaluated[-1] if evaluated else None,
        mAP=last.get('reid/mAP'),
        top1=last.get('reid/top1'),
        minutes=last.get('minutes_at_eval'),
        step_time=statistics.median(times) if times else None,
        memory_bytes=head_memory_bytes(final_checkpoint(work_dir, max_epochs)))


def save_record(path: str,
                summary: dict,
                cpu: Optional[str] = None,
                date: Optional[str] = None) -> None:
    """Keep a finished run's summary (:func:`summarise`) as JSON, with the
    machine and the date it is recorded on."""
    record = dict(
        summary, epochs={
            str(e): v
            for e, v in summary['epochs'].items()
        })
    record.pop('source', None)
    record.update(
        cpu=cpu or cpu_description(),
        recorded=date or datetime.date.today().isoformat())
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    partial = path + '.partial'
    with open(partial, 'w') as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write('\n')
    os.replace(partial, path)


def load_record(path: str) -> Optional[dict]:
    """A summary saved by :func:`save_record`, or None without one."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f)
    record['epochs'] = {int(e): v for e, v in record['epochs'].items()}
    record['source'] = 'record'
    return record


def arm_summary(work_dir: str,
                record: str,
                max_epochs: int,
                cpu: Optional[str] = None) -> Optional[dict]:
    """An arm's summary: from its work directory when that holds a finished
    run (which then replaces the record), else from its record, else what
    the work directory holds so far (None if nothing).

    Args:
        work_dir (str): the arm's work directory.
        record (str): the arm's JSON record (:func:`save_record`).
        max_epochs (int): the schedule's last epoch.
        cpu (str, optional): the machine to note in a new record.
    """
    summary = summarise(work_dir, max_epochs)
    if summary and summary['finished']:
        save_record(record, summary, cpu=cpu)
        return dict(summary, source='work_dir', cpu=cpu or cpu_description())
    return load_record(record) or summary


def at_minutes(epochs: dict, budget: float):
    """(epoch, mAP) of the last evaluation at or before ``budget`` minutes,
    or None."""
    points = [(e, v['reid/mAP']) for e, v in sorted(epochs.items())
              if 'reid/mAP' in v
              and isinstance(v.get('minutes_at_eval'), (
                  int, float)) and v['minutes_at_eval'] <= budget]
    return points[-1] if points else None


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------
def cpu_description(cpuinfo: str = '/proc/cpuinfo') -> str:
    """Model, logical cores and the flags that matter for bfloat16."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return f'unknown CPU ({os.cpu_count()} logical cores)'
    model = re.search(r'^model name\s*:\s*(.+)$', text, re.M)
    flags = re.search(r'^flags\s*:\s*(.+)$', text, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    shown = ', '.join(f'{flag} {"yes" if flag in flags else "no"}'
                      for flag in ('avx2', 'avx512_bf16', 'amx_bf16'))
    name = model.group(1).strip() if model else 'unknown CPU'
    return f'{name}, {os.cpu_count()} logical cores; {shown}'


def _num(value, fmt='{:.2f}', missing='-'):
    return fmt.format(value) if isinstance(value, (int, float)) else missing


def _mib(value):
    return _num(value / 2**20 if value is not None else None, '{:.2f} MiB')


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return lines + ['| ' + ' | '.join(row) + ' |' for row in rows]


def _epoch_table(arms, summaries, key, fmt, max_epochs) -> List[str]:
    ran = [a for a in arms if summaries.get(a.name)]
    if not ran:
        return ['No arm has run yet.']
    rows = []
    for epoch in range(1, max_epochs + 1):
        rows.append([str(epoch)] + [
            _num(summaries[a.name]['epochs'].get(epoch, {}).get(key), fmt)
            for a in ran
        ])
    return _table(['epoch'] + [a.name for a in ran], rows)


def machine_of(summary: dict, cpu: Optional[str] = None) -> str:
    """The machine an arm ran on: its record's, else this one."""
    return summary.get('cpu') or cpu or cpu_description()


def arms_by_machine(arms, summaries, cpu=None) -> Dict[str, List[str]]:
    """The names of the arms that ran, grouped by machine, in arm order."""
    machines: Dict[str, List[str]] = {}
    for arm in arms:
        s = summaries.get(arm.name)
        if s:
            machines.setdefault(machine_of(s, cpu), []).append(arm.name)
    return machines


def machine_tags(arms, summaries, cpu=None) -> Dict[str, str]:
    """A short tag per machine (A, B, ...), in the order of the arms."""
    return {
        machine: chr(ord('A') + i)
        for i, machine in enumerate(arms_by_machine(arms, summaries, cpu))
    }


def equal_minutes_budgets(arms, summaries, cpu=None) -> Dict[str, float]:
    """Per machine, the minutes of its shortest finished arm: minutes
    compare only within one machine (CPUs here differ 2-3x in speed), so
    each arm is read at the budget of the machine it ran on."""
    budgets: Dict[str, float] = {}
    for arm in arms:
        s = summaries.get(arm.name)
        if s and s['finished'] and isinstance(s['minutes'], (int, float)):
            machine = machine_of(s, cpu)
            budgets[machine] = min(
                budgets.get(machine, s['minutes']), s['minutes'])
    return budgets


def _machines(arms, summaries, cpu=None) -> List[str]:
    """Where the arms ran: one line, or one per machine when they differ
    (their minutes and step times are then not comparable across them)."""
    machines = arms_by_machine(arms, summaries, cpu)
    if len(machines) <= 1:
        return [f'Machine: {next(iter(machines), cpu or cpu_description())}.']
    tags = machine_tags(arms, summaries, cpu)
    budgets = equal_minutes_budgets(arms, summaries, cpu)

    def budget(machine):
        return f', T {budgets[machine]:.1f} min' if machine in budgets \
            else ''

    return [
        'Machines (minutes and step times compare only within one; each '
        'is tagged in the minutes plot, T is its equal-minutes budget):', ''
    ] + [
        f'- {tags[m]}{budget(m)}: {m}: {", ".join(names)}'
        for m, names in machines.items()
    ]


def _arms_table(arms) -> List[str]:
    return _table(['arm', 'differs from main in', 'config'], [[
        a.name, a.what, f'`{osp.basename(a.config)}`' +
        (f' with seed {a.seed}' if a.seed is not None else '')
    ] for a in arms])


def _results(arms, summaries, cpu=None) -> List[str]:
    budgets = equal_minutes_budgets(arms, summaries, cpu)
    several = len(machine_tags(arms, summaries, cpu)) > 1
    rows = []
    for arm in arms:
        s = summaries.get(arm.name)
        if s is None:
            rows.append([arm.name, 'not run yet'] + [''] * 6)
            continue
        state = '' if s['finished'] else \
            ' (incomplete: last evaluation at epoch ' \
            f'{s["last_eval_epoch"] or "-"})'
        budget = budgets.get(machine_of(s, cpu))
        equal = at_minutes(s['epochs'], budget) if budget else None
        if equal:
            equal = f'{equal[1]:.2f} (epoch {equal[0]}' + \
                (f', T {budget:.1f})' if several else ')')
        rows.append([
            arm.name,
            _num(s['mAP']) + state,
            _num(s['top1']),
            equal or '-',
            _mib(s['memory_bytes']),
            _num(s['step_time'], '{:.3f}'),
            _num(s['minutes'], '{:.1f}'),
            _num(
                s['epochs'].get(s['last_eval_epoch'] or -1,
                                {}).get('num_clusters'), '{:.0f}'),
        ])
    if several:
        title = 'mAP at its machine\'s T min'
    elif budgets:
        title = f'mAP at {next(iter(budgets.values())):.1f} min'
    else:
        title = 'mAP at equal minutes'
    return _table([
        'arm', 'mAP', 'top-1', title, 'head memory', 'step (s)', 'minutes',
        'clusters'
    ], rows)


def draw_study(arms, summaries, cpu=None) -> dict:
    """mAP against the epoch and the minutes, NMI against the epoch: one
    panel per question, each with the main arm; {file name: Figure}.

    Minutes compare only within a machine: when the arms ran on several,
    the minutes plot tags each curve with its machine (``[A]``, as the
    report lists them) and draws each machine's equal-minutes budget
    (dotted, tagged at its top)."""
    from matplotlib.figure import Figure
    main = summaries.get(MAIN.name)
    tags = machine_tags(arms, summaries, cpu)
    budgets = equal_minutes_budgets(arms, summaries, cpu)
    several = len(tags) > 1
    figures = [
        ('map_vs_epoch.png', 'mAP (%) against the epoch', 'reid/mAP', None),
        ('map_vs_minutes.png', 'mAP (%) against the minutes' +
         (' (minutes compare only within one machine: [A], [B], ... as '
          'listed in the report; dotted: each machine\'s T)'
          if several else ' (dotted: T, the equal-minutes budget)'),
         'reid/mAP', 'minutes_at_eval'),
        ('nmi_vs_epoch.png',
         'pseudo-label NMI against the epoch (solid: clustered images; '
         'dashed: all, outliers as one cluster)', 'nmi', None),
    ]
    drawn = {}
    for name, title, key, x_key in figures:
        fig = Figure(figsize=(18, 7), layout='constrained')
        axes = fig.subplots(2, 5).flatten()
        for ax, group in zip(axes, GROUPS):
            lines = [(MAIN_LABEL[group], main)
                     ] + [(a.label or a.what, summaries.get(a.name))
                          for a in arms if a.group == group]
            keys = [(key, 'o-')
                    ] + ([('nmi_all', 'o--')] if key == 'nmi' else [])
            machines = set()
            for i, (label, summary) in enumerate(lines):
                if not summary:
                    continue
                colour = 'k' if i == 0 else f'C{i - 1}'
                machine = machine_of(summary, cpu)
                if x_key is not None and several:
                    label = f'{label} [{tags[machine]}]'
                machines.add(machine)
                for k, style in keys:
                    xs, ys = _series(summary['epochs'], k, x_key)
                    if xs:
                        ax.plot(
                            xs,
                            ys,
                            style,
                            color=colour,
                            markersize=3,
                            label=label if k == key else None)
            if x_key is not None:
                for machine in sorted(machines & set(budgets)):
                    ax.axvline(
                        budgets[machine],
                        color='grey',
                        linestyle=':',
                        linewidth=1)
                    if several:
                        # inside the top edge: above it is the title
                        ax.annotate(
                            tags[machine], (budgets[machine], 0.99),
                            xycoords=('data', 'axes fraction'),
                            xytext=(2, 0),
                            textcoords='offset points',
                            ha='left',
                            va='top',
                            fontsize=7,
                            color='grey')
            ax.set_title(group)
            ax.set_xlabel('epoch' if x_key is None else 'minutes')
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(title)
        drawn[name] = fig
    return drawn


def plot_study(arms, summaries, out_dir, cpu=None) -> List[str]:
    """Save :func:`draw_study`'s figures as PNGs in ``out_dir``."""
    import matplotlib
    matplotlib.use('Agg')
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for name, fig in draw_study(arms, summaries, cpu).items():
        files.append(osp.join(out_dir, name))
        fig.savefig(files[-1], dpi=80)
    return files


def _kept_reading(out: str) -> str:
    if osp.isfile(out):
        with open(out) as f:
            text = f.read()
        match = re.search(
            re.escape(READING_START) + r'\n?(.*?)\n?' + re.escape(READING_END),
            text, re.S)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return READING_PLACEHOLDER


def write_report(out: str,
                 arms: List[Arm],
                 summaries: Dict[str, Optional[dict]],
                 schedule: dict,
                 command: str,
                 work_root: str,
                 records: str,
                 cpu: Optional[str] = None,
                 date: Optional[str] = None) -> str:
    """Write the markdown report and its PNGs; returns the markdown."""
    cpu = cpu or cpu_description()  # read /proc/cpuinfo once
    reading = _kept_reading(out)
    plots_dir = osp.splitext(out)[0]
    files = plot_study(arms, summaries, plots_dir, cpu)
    sched = schedule
    lines = [
        '# Ablations: Cluster Contrast on market1501-trainsplit, on CPU',
        '',
        'Written by `tools/analysis_tools/run_ablations.py` from the runs in '
        f'`{work_root}/` and, for arms whose run is not there, their records '
        f'in `{records}/`. To reproduce (arms already finished are skipped, '
        'so the same command also continues an interrupted study):',
        '',
        f'    {command}',
        '',
    ] + _machines(arms, summaries, cpu) + [
        '',
        f'Report written {date or datetime.date.today().isoformat()}.',
        '',
        '## Schedule',
        '',
        'Every arm is a config of `configs/cluster_contrast/ablations/` '
        '(its README lists them): the market1501-trainsplit CPU recipe with '
        'ImageNet MobileNetV2, varied in one thing, on one shared schedule: '
        f'{sched["max_epochs"]} epochs of {sched["iters_per_epoch"]} '
        f'iterations, Adam at lr {sched["lr"]:g}, x0.1 from epoch '
        f'{", ".join(str(m) for m in sched["milestones"])} on, evaluation '
        f'every {sched["val_interval"]} epochs, seed {sched["seed"]}; the '
        f'main arm\'s batches hold {sched["batch_size"]} images (P x Z = '
        f'{sched["batch_size"] // sched["num_instances"]} x '
        f'{sched["num_instances"]}). The arms run '
        'one after another, never two at once.',
        '',
    ]
    lines += _arms_table(arms)
    lines += ['', '## Results', '']
    lines += _results(arms, summaries, cpu)
    lines += [
        '',
        'mAP and top-1 (%) at the last evaluation. "mAP at T min": each '
        'arm\'s last evaluation at or before T, the minutes of the '
        'shortest finished arm on the same machine (not interpolated: an '
        'arm only slightly slower than that one shows an earlier epoch; '
        '"-": no evaluation by then; T is dotted in the minutes plot). '
        'Head memory: the '
        'training head\'s buffers in the final checkpoint (memory and '
        'per-image labels). Step: median of the '
        'logged iteration times, data loading included. Minutes: from the '
        'start of the run to its last evaluation, clustering and '
        'evaluations included. Clusters: of the clustering the last '
        'evaluated epoch trained on.',
        '',
        '## Pseudo-labels per epoch',
        '',
        'Statistics of the clustering that the epoch trained on, against '
        'the true identities.',
        '',
        '### Clusters',
        '',
    ]
    # the longest run's epochs (an arm may run a longer schedule)
    max_epochs = max(
        [sched['max_epochs']] +
        [max(s['epochs'], default=0) for s in summaries.values() if s])
    lines += _epoch_table(arms, summaries, 'num_clusters', '{:.0f}',
                          max_epochs)
    lines += ['', '### Outliers (unclustered images)', '']
    lines += _epoch_table(arms, summaries, 'num_outliers', '{:.0f}',
                          max_epochs)
    lines += ['', '### NMI of the clustered images', '']
    lines += _epoch_table(arms, summaries, 'nmi', '{:.3f}', max_epochs)
    lines += [
        '', '### NMI of all images (outliers counted as one cluster)', ''
    ]
    lines += _epoch_table(arms, summaries, 'nmi_all', '{:.3f}', max_epochs)
    lines += ['', '## Curves', '']
    rel = osp.relpath(plots_dir, osp.dirname(osp.abspath(out)) or '.')
    for path in files:
        name = osp.basename(path)
        lines += [f'![{osp.splitext(name)[0]}]({rel}/{name})', '']
    lines += [
        "## Reading of the paper's claims", '', READING_START, reading,
        READING_END, ''
    ]
    text = '\n'.join(lines)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    partial = out + '.partial'
    with open(partial, 'w') as f:
        f.write(text)
    os.replace(partial, out)
    return text


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------
def train_command(arm: Arm, work_dir: str, data_root: str) -> List[str]:
    """The ``tools/train.py`` command line of an arm."""
    options = [f'{loader}.dataset.data_root={data_root}' for loader in LOADERS]
    if arm.seed is not None:
        options.append(f'randomness.seed={arm.seed}')
    return [
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'),
        osp.join(ROOT, arm.config), '--work-dir', work_dir, '--cfg-options'
    ] + options


def run_arm(arm: Arm, work_dir: str, data_root: str) -> int:
    """Train an arm from the start; its exit code."""
    if osp.isdir(work_dir):
        aside = f'{work_dir}.incomplete-{time.strftime("%Y%m%d_%H%M%S")}'
        print(f'[{arm.name}] moving the unfinished run aside to {aside}')
        os.rename(work_dir, aside)
    os.makedirs(work_dir)
    cmd = train_command(arm, work_dir, data_root)
    print(f'[{arm.name}] ' + ' '.join(cmd), flush=True)
    with open(osp.join(work_dir, 'console.log'), 'w') as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        return proc.wait()


def reproduce_command(args) -> str:
    parts = ['.venv/bin/python tools/analysis_tools/run_ablations.py']
    if args.seeds != [2, 3]:
        parts.append('--seeds' + ''.join(f' {s}' for s in args.seeds))
    if args.data_root != DEFAULT_DATA_ROOT:
        parts.append(f'--data-root {args.data_root}')
    if args.work_root != 'work_dirs/ablations':
        parts.append(f'--work-root {args.work_root}')
    if args.out != 'docs/ablations.md':
        parts.append(f'--out {args.out}')
    if args.records != osp.join(osp.splitext(args.out)[0], 'runs'):
        parts.append(f'--records {args.records}')
    return ' '.join(parts)


def main(argv=None):
    args = parse_args(argv)
    schedule = schedule_of(MAIN.config)
    # an arm may run another schedule than the main arm's (input-128x64-36e)
    max_epochs = {
        a.name: schedule_of(a.config)['max_epochs']
        for a in args.all_arms
    }

    def summary_of(arm):
        return arm_summary(
            osp.join(args.work_root, arm.name),
            osp.join(args.records, f'{arm.name}.json'), max_epochs[arm.name])

    def report():
        summaries = {a.name: summary_of(a) for a in args.all_arms}
        write_report(args.out, args.all_arms, summaries, schedule,
                     reproduce_command(args), args.work_root, args.records)
        print(f'Report: {args.out}')
        return summaries

    if args.report_only:
        report()
        return 0
    missing = [
        path for path in (args.data_root, osp.join(ROOT, PRETRAINED))
        if not osp.exists(path)
    ]
    if missing:
        sys.exit('missing: ' + ', '.join(missing) + ' (the data set, and '
                 'the ImageNet MobileNetV2 that `make demo` converts)')
    failed, ran = [], False
    for arm in args.selected:
        work_dir = osp.join(args.work_root, arm.name)
        summary = summary_of(arm)
        if summary and summary['finished']:
            print(f'[{arm.name}] finished before, skipped')
            continue
        # absolute: the training runs in the project root
        code = run_arm(arm, osp.abspath(work_dir), osp.abspath(args.data_root))
        if code:
            print(f'[{arm.name}] failed with exit code {code}')
            failed.append(arm.name)
        report()  # after every arm: the study may stop at any point
        ran = True
    if not ran:
        report()
    if failed:
        print('Failed arms: ' + ', '.join(failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
