"""ClusterMemoryHead(sharded=True): the memory split by rows across ranks.

The two-process tests start tests/sharded_memory_worker.py with
``torch.distributed.run`` (gloo, CPU); it runs a replicated and a sharded
head side by side on the same batches and saves what is compared here.
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import nn

import mmcc.models  # noqa: F401  (registers the head and its loss)
from mmcc.engine.hooks import SyncNormBuffersHook
from mmcc.engine.hooks.sync_norm_buffers_hook import synced_buffers
from mmcc.models.functional import shard_range, sharded_cluster_nce
from mmcc.registry import MODELS
from mmcc.utils.host import free_port

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tests'))
from sharded_memory_worker import CASES  # noqa: E402

DIM, TAU = 6, 0.05


@pytest.fixture(autouse=True)
def mmcc_scope():
    with DefaultScope.overwrite_default_scope('mmcc'):
        yield


def _launch(args, timeout=300):
    env = dict(__import__('os').environ, CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run(
        [
            sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
            '2', '--master_port',
            str(free_port())
        ] + args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope='module')
def two_ranks(tmp_path_factory):
    """Both ranks' results of one launch of the worker."""
    out = tmp_path_factory.mktemp('sharded')
    _launch([osp.join(ROOT, 'tests', 'sharded_memory_worker.py'), str(out)])
    return [torch.load(out / f'rank{rank}.pt') for rank in (0, 1)]


def build_head(**kwargs):
    return MODELS.build(
        dict(type='ClusterMemoryHead', feat_dim=DIM, momentum=0.3, **kwargs))


# --- two processes -------------------------------------------------------


@pytest.mark.parametrize('case', sorted(CASES))
def test_two_ranks_match_the_replicated_head(two_ranks, case):
    """Loss, top-1 and gradient on each rank, and the memory after all the
    steps, equal the replicated head's."""
    num_clusters = two_ranks[0][case]['num_clusters']
    for rank, results in enumerate(two_ranks):
        record = results[case]
        for t, step in enumerate(record['steps']):
            rep, sh = step['rep'], step['sh']
            torch.testing.assert_close(
                sh['loss'],
                rep['loss'],
                atol=1e-5,
                rtol=0,
                msg=f'{case} rank {rank} step {t} loss')
            assert float(sh['acc']) == float(rep['acc']), (case, rank, t)
            torch.testing.assert_close(
                sh['grad'],
                rep['grad'],
                atol=1e-5,
                rtol=0,
                msg=f'{case} rank {rank} step {t} gradient')
        torch.testing.assert_close(
            record['memory_sh_full'], record['memory_rep'], atol=1e-6, rtol=0)
        # each rank holds its block only
        start, stop = shard_range(num_clusters, 2, rank)
        assert record['block_start'] == start
        assert record['block'].shape == (stop - start, DIM)
        torch.testing.assert_close(
            record['block'],
            record['memory_rep'][start:stop],
            atol=1e-6,
            rtol=0)


def test_two_ranks_cases_cover_the_corners(two_ranks):
    """The scenarios include an odd K, a rank without rows, and batches
    whose labels all live on the other rank."""
    sizes = {name: two_ranks[1][name]['block'].size(0) for name in CASES}
    assert sizes['one_cluster_mean'] == 0
    assert two_ranks[0]['odd_k_mean']['num_clusters'] % 2 == 1
    # losses are not trivially small: the gradients are really compared
    losses = [
        float(step['rep']['loss']) for results in two_ranks
        for step in results['odd_k_mean']['steps']
    ]
    assert max(losses) > 0.5


def test_two_ranks_checkpoint_round_trip(two_ranks):
    """Rank 0's state dict holds the whole memory; loading it gives every
    rank its block back (and a replicated head the whole memory); other
    ranks and a copy gathered before the last update are refused."""
    first, second = two_ranks[0]['checkpoint'], two_ranks[1]['checkpoint']
    assert first['saved_keys'] == ['memory', 'sample_labels']
    assert first['saved_memory'].shape == (9, DIM)
    assert second['state_dict_off_rank0'] == 'refused'
    assert first['stale'] == 'refused'
    for record in (first, second):
        assert record['loaded_block_equal'] and record['loaded_labels_equal']
        assert record['loaded_num_clusters'] == 9
        assert torch.equal(record['replicated_loaded'], first['saved_memory'])
    # the saved memory is the one gathered on every rank
    assert torch.equal(first['saved_memory'], first['gathered'])
    assert torch.equal(second['gathered'], first['gathered'])


def test_two_ranks_hook_averages_batchnorm_not_the_memory(two_ranks):
    """SyncNormBuffersHook still averages BatchNorm statistics (1 and 2 ->
    1.5), leaves the memory blocks alone, and lets rank 0 save the whole
    memory; DDP's per-forward buffer broadcast leaves the blocks too."""
    for record in (two_ranks[0]['hook'], two_ranks[1]['hook']):
        assert torch.equal(record['running_mean'], torch.full((DIM, ), 1.5))
        assert torch.equal(record['running_var'], torch.full((DIM, ), 15.))
        assert record['num_batches_tracked'] == 6
        assert record['block_after_ddp'] and record['block_after_hook']
    assert two_ranks[0]['hook']['saved_memory'].shape == (7, DIM)


TRAIN_CONFIG = """
_base_ = {base!r}
model = dict(
    backbone=dict(
        _delete_=True, type='mmpretrain.ResNet', depth=18,
        out_indices=(3, )),
    head=dict(sharded=True))
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        progress=False,
        cluster=dict(type='dbscan', eps=0.6, min_samples=4, k1=8, k2=2))
]
"""


def test_two_ranks_train_with_a_sharded_memory(tiny_synthetic, tmp_path):
    """tools/train.py (through tests/dist_train_worker.py) trains 2 epochs
    with a sharded head under DDP; the checkpoint rank 0 saves at the end
    holds the two ranks' blocks, whole. About 40 s on 2 CPU cores."""
    config = tmp_path / 'sharded.py'
    config.write_text(
        TRAIN_CONFIG.format(
            base=osp.join(
                ROOT, 'configs/cluster_contrast/'
                'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')))
    data = []
    for key in ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
                'test_dataloader'):
        data += [
            f'{key}.dataset.data_root={tiny_synthetic}', f'{key}.num_workers=0'
        ]
    work = tmp_path / 'work'
    _launch(
        [
            osp.join(ROOT, 'tests', 'dist_train_worker.py'),
            str(tmp_path),
            str(config), '--work-dir',
            str(work), '--cfg-options', 'train_cfg.max_epochs=2',
            'train_cfg.val_interval=3', 'train_dataloader.batch_size=16',
            'train_dataloader.sampler.num_instances=4',
            'train_dataloader.sampler.iters_per_epoch=2',
            'default_hooks.checkpoint.interval=1',
            'train_dataloader.persistent_workers=False'
        ] + data,
        timeout=600)
    blocks = [torch.load(tmp_path / f'rank{r}.pt')['memory'] for r in (0, 1)]
    saved = torch.load(
        work / 'epoch_2.pth', weights_only=False)['state_dict']['head.memory']
    num_clusters = saved.size(0)
    assert num_clusters > 1
    assert [b.size(0) for b in blocks] == [
        stop - start
        for start, stop in (shard_range(num_clusters, 2, r) for r in (0, 1))
    ]
    assert torch.equal(torch.cat(blocks), saved)


# --- one process ---------------------------------------------------------


def test_shard_range_tiles_the_rows():
    for num_rows in range(0, 13):
        for world_size in range(1, 5):
            blocks = [
                shard_range(num_rows, world_size, r) for r in range(world_size)
            ]
            assert blocks[0][0] == 0 and blocks[-1][1] == num_rows
            for (_, stop), (start, _) in zip(blocks, blocks[1:]):
                assert stop == start
            size = -(-num_rows // world_size)
            assert all(0 <= b - a <= size for a, b in blocks)
    assert shard_range(1, 2, 1) == (1, 1)  # a rank may hold no row
    with pytest.raises(ValueError):
        shard_range(4, 2, 2)


def test_function_without_process_group_is_cluster_nce():
    g = torch.Generator().manual_seed(0)
    memory = F.normalize(torch.randn(9, DIM, generator=g), dim=1)
    feats = torch.randn(7, DIM, generator=g, requires_grad=True)
    labels = torch.tensor([0, 8, -1, 3, 3, 5, -1])
    out = sharded_cluster_nce(
        F.normalize(feats, dim=1), labels, memory, 0, TAU)
    out.loss.backward()
    grad = feats.grad.clone()
    feats.grad = None
    logits = F.normalize(feats, dim=1) @ memory.t() / TAU
    expected = F.cross_entropy(
        logits, labels, ignore_index=-1, reduction='sum') / 5
    expected.backward()
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, feats.grad, atol=1e-5, rtol=0)
    top1 = (logits.argmax(1) == labels).sum() / 5
    assert float(out.accuracy) == float(top1)
    assert torch.equal(out.all_labels, labels)
    assert torch.equal(out.all_queries, F.normalize(feats, dim=1).detach())
    assert not out.accuracy.requires_grad
    # no labelled query: a zero loss, a zero gradient
    x = torch.randn(3, DIM, requires_grad=True)
    out = sharded_cluster_nce(x, torch.full((3, ), -1), memory, 0, TAU)
    out.loss.backward()
    assert float(out.loss.detach()) == 0 and not x.grad.any()


def test_function_under_autocast_keeps_the_memory_dtype():
    memory = F.normalize(torch.randn(5, DIM), dim=1)
    x = torch.randn(4, DIM, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        queries = F.normalize(x, dim=1).to(torch.bfloat16)
        out = sharded_cluster_nce(queries, torch.tensor([0, 1, 2, 4]), memory,
                                  0, TAU)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize('mode', ['mean', 'hard'])
def test_world_size_one_is_the_replicated_head(mode):
    g = torch.Generator().manual_seed(1)
    centroids = torch.randn(7, DIM, generator=g)
    sample_labels = torch.randint(-1, 7, (40, ), generator=g)
    replicated = build_head(update_mode=mode)
    sharded = build_head(update_mode=mode, sharded=True)
    for head in (replicated, sharded):
        head.reset(centroids, sample_labels)
    assert sharded.num_clusters == 7
    for step in range(4):
        feats = torch.randn(8, DIM, generator=g)
        samples = [dict(sample_idx=int(i)) for i in torch.randperm(40)[:8]]
        outputs = []
        for head in (replicated, sharded):
            x = feats.clone().requires_grad_()
            losses = head.loss(x, samples)
            losses['loss'].backward()
            outputs.append((losses['loss'], losses['acc'], x.grad))
        for a, b in zip(*outputs):
            assert torch.equal(a, b), step
        assert torch.equal(replicated.memory, sharded.memory)
    assert torch.equal(replicated(feats), sharded(feats))
    expected, got = replicated.state_dict(), sharded.state_dict()
    assert list(expected) == list(got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert torch.equal(sharded.gather_memory(), replicated.memory)
    sharded.prepare_state_dict()  # a no-op in one process
    assert 'sharded=True' in repr(sharded)
    assert 'sharded' not in repr(replicated)


def test_sharded_memory_is_not_a_buffer_but_moves_and_persists():
    head = build_head(sharded=True)
    head.reset(torch.randn(4, DIM), torch.tensor([0, 1, 2, 3, -1]))
    # invisible to buffer synchronisation (DDP, SyncBuffersHook)...
    assert [name for name, _ in head.named_buffers()] == ['sample_labels']
    # ...but moved with the module
    head.double()
    assert head.memory.dtype == torch.float64
    head.float()
    # checkpoints are interchangeable with the replicated head's
    replicated = build_head()
    replicated.load_state_dict(head.state_dict())
    assert torch.equal(replicated.memory, head.memory)
    replicated.reset(torch.randn(6, DIM), torch.arange(6))
    head.load_state_dict(replicated.state_dict())
    assert head.num_clusters == 6
    assert torch.equal(head.memory, replicated.memory)
    assert head.memory.data_ptr() != replicated.memory.data_ptr()
    with pytest.raises(RuntimeError, match='memory'):
        head.load_state_dict({'sample_labels': torch.arange(6)})
    with pytest.raises(RuntimeError, match='size mismatch'):
        head.load_state_dict({
            'memory': torch.zeros(3, DIM + 1),
            'sample_labels': torch.arange(3)
        })


def test_sharded_head_needs_the_cluster_nce_loss():
    with pytest.raises(ValueError, match='ClusterNCE'):
        build_head(sharded=True, loss=nn.CrossEntropyLoss())


class _Model(nn.Module):

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(DIM)
        self.head = build_head()


def test_hook_skips_the_heads_memory_and_labels():
    model = _Model()
    synced = {id(b) for b in synced_buffers(model)}
    assert synced == {id(b) for b in model.bn.buffers()}
    # one process: nothing to do, nothing changes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    SyncNormBuffersHook().after_train_epoch(type('R', (), {'model': model}))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_default_runtime_uses_the_hook():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/_base_/default_runtime.py'))
    assert cfg.default_hooks.sync_buffers.type == 'SyncNormBuffersHook'
