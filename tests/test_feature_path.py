"""The lean feature path: extract_features writes batches straight into its
output and, under DDP, streams them to rank 0 only; PseudoLabelHook
clusters there and broadcasts labels and centroids as tensors.

The two-rank tests start two gloo processes with ``torch.multiprocessing``
(spawn) once for the module; each rank runs every scenario in turn in the
same process group (an error raised on both ranks must leave the group in
step for the next one) and saves what it saw. A rank that hangs is killed
after a timeout and fails the tests instead of hanging them.
"""
import datetime
import logging
import os
import traceback
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.dataset import DefaultSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from mmcc.engine.feature_extraction import extract_features
from mmcc.engine.hooks.pseudo_label_hook import PseudoLabelHook
from mmcc.utils.host import free_port

DIM = 16
NUM_GROUPS = 4
# odd: DefaultSampler pads the second rank with a duplicate of sample 0
NUM_SAMPLES = 41
TIMEOUT = 240  # seconds for the whole two-rank run
CLUSTER = dict(type='dbscan', eps=0.5, min_samples=3, k1=6, k2=2)


class _Points(Dataset):
    """Sample i: group ``i % NUM_GROUPS`` and a small offset within it; NaN
    input for the indices in ``nan_at``."""

    def __init__(self, num=NUM_SAMPLES, nan_at=()):
        self.num, self.nan_at = num, set(nan_at)

    def __len__(self):
        return self.num

    def __getitem__(self, i):
        x = torch.tensor([2.0 * (i % NUM_GROUPS), 0.02 * (i // NUM_GROUPS)])
        if i in self.nan_at:
            x[1] = float('nan')
        return dict(inputs=x, data_samples=dict(sample_idx=i))


def _collate(batch):
    return dict(
        inputs=[b['inputs'] for b in batch],
        data_samples=[b['data_samples'] for b in batch])


class _Preprocessor(nn.Module):

    def forward(self, data, training=False):
        return dict(
            inputs=torch.stack(data['inputs']),
            data_samples=data['data_samples'])


class _TinyModel(nn.Module):
    """Per-row elementwise maths (no matmul), so a row's embedding does not
    depend on the batch it came in; dropout makes train mode visible."""

    def __init__(self, head=None):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(DIM, generator=g))
        self.v = nn.Parameter(torch.randn(DIM, generator=g))
        self.drop = nn.Dropout(0.5)
        self.data_preprocessor = _Preprocessor()
        if head is not None:
            self.head = head

    def forward(self, inputs, mode='tensor'):
        assert mode == 'tensor'
        out = torch.sin(inputs[:, :1] * self.w + inputs[:, 1:2] * self.v)
        return self.drop(out) + 1.0


def _old_extract(model, loader, num_samples):
    """The previous implementation (single process): list, cat, scatter."""
    was_training = model.training
    model.eval()
    feats, indices = [], []
    with torch.no_grad():
        for data in loader:
            data = model.data_preprocessor(data, False)
            feats.append(model(data['inputs'], mode='tensor').float())
            indices.append(
                torch.tensor([s['sample_idx'] for s in data['data_samples']]))
    model.train(was_training)
    feats, indices = torch.cat(feats), torch.cat(indices)
    out = torch.zeros(num_samples, feats.size(1))
    out[indices] = feats
    return out


def _loader(dataset, sampler=None, batch_size=4):
    if sampler is None:
        sampler = DefaultSampler(dataset, shuffle=False)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=_collate)


def _reference():
    """Single-process features of the whole data set."""
    dataset = _Points()
    return _old_extract(_TinyModel(), _loader(dataset), len(dataset))


# --- single process ---------------------------------------------------------


def test_single_process_equals_the_old_path_in_dataset_order():
    dataset = _Points()
    model = _TinyModel()
    model.train()
    g = torch.Generator().manual_seed(1)
    loader = _loader(dataset, RandomSampler(dataset, generator=g), 5)
    g.manual_seed(1)
    old = _old_extract(model, loader, len(dataset))
    g.manual_seed(1)
    new = extract_features(model, loader, progress=False)
    assert model.training  # restored
    assert new.dtype == torch.float32 and new.shape == (len(dataset), DIM)
    assert torch.equal(new, old)
    assert torch.equal(old, _reference())  # the order is the index order
    half = extract_features(model, loader, progress=False, dtype=torch.float16)
    assert half.dtype == torch.float16
    assert torch.equal(half, old.half())
    # in one process 'main' is the same as 'all'
    assert torch.equal(
        extract_features(model, loader, progress=False, gather_to='main'), old)


def test_single_process_checks():
    dataset = _Points()
    model = _TinyModel()
    partial = _loader(Subset(dataset, range(30)))
    with pytest.raises(RuntimeError, match='11 of 41 samples were not'):
        extract_features(model, partial, num_samples=41, progress=False)
    with pytest.raises(ValueError, match='sample_idx outside'):
        extract_features(model, _loader(dataset), num_samples=20)
    with pytest.raises(ValueError, match='gather_to'):
        extract_features(model, _loader(dataset), gather_to='rank0')
    with pytest.raises(ValueError, match='dtype'):
        extract_features(model, _loader(dataset), dtype=torch.float64)
    assert model.training


# --- two ranks ---------------------------------------------------------------


class _Sampler:
    """Stands in for the train sampler: keeps the labels it is given."""
    labels = None

    def set_labels(self, labels):
        self.labels = torch.as_tensor(labels).clone()


class _Visualizer:

    def add_scalars(self, scalars, step=None):
        self.scalars = scalars


def _runner(model, dataset):
    sampler = _Sampler()
    return SimpleNamespace(
        model=model,
        epoch=0,
        iter=0,
        train_dataloader=SimpleNamespace(
            dataset=dataset,
            batch_sampler=SimpleNamespace(sampler=sampler),
            sampler=sampler),
        logger=logging.getLogger('test_feature_path'),
        visualizer=_Visualizer())


def _heads():
    from mmcc.models.heads.cluster_memory_head import ClusterMemoryHead

    class FeatureHead(ClusterMemoryHead):
        """A head that asks for the instance features."""
        needs_features = True

        def reset(self, centroids, sample_labels, features=None):
            super().reset(centroids, sample_labels)
            self.features = features.clone()

    return ClusterMemoryHead, FeatureHead


def _run_hook(head_cls, dataset, cluster=CLUSTER):
    """One clustering round of the hook; what the head and sampler hold."""
    model = _TinyModel(head_cls(feat_dim=DIM))
    runner = _runner(model, dataset)
    hook = PseudoLabelHook(cluster=cluster, progress=False)
    hook._dataloader = _loader(dataset)
    hook.before_train_epoch(runner)
    state = dict(
        memory=model.head.memory.clone(),
        labels=model.head.sample_labels.clone(),
        sampler_labels=runner.train_dataloader.sampler.labels)
    if hasattr(model.head, 'features'):
        state['features'] = model.head.features
    return state


class _RankSampler:
    """Uneven shards: rank 0 takes the first ``split`` samples."""

    def __init__(self, num, split, rank):
        self.indices = list(range(split) if rank == 0 else range(split, num))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _scenarios(rank):
    """What each rank records; exceptions are recorded, not raised."""
    dataset = _Points()
    model = _TinyModel()
    plain, feature_head = _heads()
    return dict(
        main=lambda: extract_features(
            model, _loader(dataset), progress=False, gather_to='main'),
        all=lambda: extract_features(model, _loader(dataset), progress=False),
        half_main=lambda: extract_features(
            model,
            _loader(dataset),
            progress=False,
            gather_to='main',
            dtype=torch.float16),
        uneven=lambda: extract_features(
            model,
            _loader(dataset, _RankSampler(len(dataset), 33, rank), 4),
            progress=False,
            gather_to='main'),
        missing=lambda: extract_features(
            model,
            _loader(dataset, _RankSampler(len(dataset) - 2, 20, rank)),
            progress=False,
            gather_to='main'),
        bad_index=lambda: extract_features(
            model,
            _loader(dataset),
            num_samples=len(dataset) - 1,
            progress=False,
            gather_to='main'),
        hook=lambda: _run_hook(plain, dataset),
        hook_features=lambda: _run_hook(feature_head, dataset),
        hook_nan=lambda: _run_hook(plain, _Points(nan_at=(0, ))),
        hook_noise=lambda: _run_hook(plain, dataset,
                                     dict(CLUSTER, eps=1e-6, min_samples=5)),
        after_errors=lambda: extract_features(
            model, _loader(dataset), progress=False, gather_to='main'),
    )


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60))
    results = {}
    try:
        for name, scenario in _scenarios(rank).items():
            try:
                results[name] = ('ok', scenario())
            except Exception as error:
                results[name] = ('error', type(error).__name__, str(error),
                                 traceback.format_exc())
    finally:
        torch.save(results, os.path.join(out_dir, f'rank{rank}.pt'))
        torch_dist.destroy_process_group()


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('ranks'))
    ctx = mp.get_context('spawn')
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(rank, port, out_dir))
        for rank in (0, 1)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(TIMEOUT)
    hung = [p for p in procs if p.is_alive()]
    for proc in hung:
        proc.kill()
        proc.join()
    assert not hung, f'{len(hung)} rank(s) hung'
    assert [p.exitcode for p in procs] == [0, 0]
    return [
        torch.load(os.path.join(out_dir, f'rank{r}.pt'), weights_only=False)
        for r in (0, 1)
    ]


def _ok(result):
    assert result[0] == 'ok', result[-1]
    return result[1]


def test_two_ranks_rank0_gets_the_single_process_features(ranks):
    first, second = ranks
    expected = _reference()
    assert torch.equal(_ok(first['main']), expected)
    assert _ok(second['main']) is None
    assert torch.equal(_ok(first['half_main']), expected.half())
    assert _ok(second['half_main']) is None
    # uneven shards (rank 0: 9 batches, rank 1: 2)
    assert torch.equal(_ok(first['uneven']), expected)
    assert _ok(second['uneven']) is None
    # gather_to='all', the default: the old behaviour
    assert torch.equal(_ok(first['all']), expected)
    assert torch.equal(_ok(second['all']), expected)


def test_two_ranks_raise_the_same_errors_and_stay_in_step(ranks):
    for name, kind, match in (('missing', 'RuntimeError',
                               '2 of 41 samples were not embedded'),
                              ('bad_index', 'ValueError',
                               'sample_idx 40, outside')):
        errors = [r[name] for r in ranks]
        assert [e[0] for e in errors] == ['error', 'error'], errors
        assert [e[1] for e in errors] == [kind, kind]
        assert match in errors[0][2] and errors[0][2] == errors[1][2]
    # the group works after them
    assert torch.equal(_ok(ranks[0]['after_errors']), _reference())


def test_two_ranks_hook_gives_identical_labels_and_memory(ranks):
    first, second = (_ok(r['hook']) for r in ranks)
    plain, _ = _heads()
    single = _run_hook(plain, _Points())
    assert int(single['labels'].max()) + 1 == NUM_GROUPS
    for key in ('memory', 'labels', 'sampler_labels'):
        assert torch.equal(first[key], second[key]), key
        assert torch.equal(first[key], single[key]), key
    assert torch.equal(first['sampler_labels'], first['labels'])


def test_two_ranks_hook_hands_features_to_a_head_that_needs_them(ranks):
    first, second = (_ok(r['hook_features']) for r in ranks)
    expected = _reference()
    for state in (first, second):
        assert state['features'].dtype == torch.float32
        assert torch.equal(state['features'], expected)
    assert torch.equal(first['memory'], second['memory'])
    assert torch.equal(first['labels'], second['labels'])


def test_two_ranks_hook_errors_stop_both_ranks(ranks):
    for name, kind, match in (('hook_nan', 'FloatingPointError',
                               '1 of 41 training embeddings are NaN/Inf'),
                              ('hook_noise', 'RuntimeError',
                               'marked every sample as noise')):
        errors = [r[name] for r in ranks]
        assert [e[0] for e in errors] == ['error', 'error'], errors
        assert [e[1] for e in errors] == [kind, kind], errors
        assert match in errors[0][2] and errors[0][2] == errors[1][2]


def test_hook_single_process_raises_on_nan():
    plain, _ = _heads()
    with pytest.raises(FloatingPointError, match='NaN/Inf'):
        _run_hook(plain, _Points(nan_at=(3, )))
