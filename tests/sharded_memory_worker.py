"""One rank of tests/test_sharded_cluster_memory.py (gloo, CPU).

Runs a replicated and a sharded ``ClusterMemoryHead`` side by side on the
same batches and saves, per rank, what the test compares: losses, top-1,
gradients w.r.t. the rank's features, both memories after the updates, and
the results of the checkpoint round trip and of ``SyncNormBuffersHook``.

    python -m torch.distributed.run --nproc_per_node 2 \
        tests/sharded_memory_worker.py OUT_DIR
"""
import os.path as osp
import sys
from types import SimpleNamespace

import torch
import torch.distributed as torch_dist
from mmengine.registry import DefaultScope
from torch import nn
from torch.nn.parallel import DistributedDataParallel

DIM = 6

# name -> (K, per-rank batch sizes, update mode, steps, label rule)
CASES = {
    'odd_k_mean': (7, (5, 3), 'mean', 4, 'random'),
    'odd_k_hard': (7, (5, 3), 'hard', 4, 'random'),
    # rank 0's queries all belong to rank 1's block and vice versa
    'crossed_mean': (7, (4, 4), 'mean', 3, 'crossed'),
    'crossed_hard': (7, (4, 4), 'hard', 3, 'crossed'),
    # several queries per cluster: the mean update's sequential scan
    'even_k_repeats_mean': (10, (8, 8), 'mean', 4, 'repeats'),
    'even_k_repeats_hard': (10, (8, 8), 'hard', 4, 'repeats'),
    # rank 1 holds no row at all
    'one_cluster_mean': (1, (3, 2), 'mean', 2, 'random'),
    'random_k_mean': (None, (6, 7), 'mean', 3, 'random'),
    'random_k_hard': (None, (6, 7), 'hard', 3, 'random'),
}


def build_head(**kwargs):
    import mmcc.models  # noqa: F401  (registers the head and its loss)
    from mmcc.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmcc'):
        return MODELS.build(
            dict(
                type='ClusterMemoryHead', feat_dim=DIM, momentum=0.3,
                **kwargs))


def case_labels(rule, num_clusters, sizes, steps, g):
    """(steps, world, B_max) labels; -1 marks padding as well as outliers
    (positions beyond a rank's batch size are never used)."""
    world = len(sizes)
    labels = torch.full((steps, world, max(sizes)), -1, dtype=torch.long)
    for t in range(steps):
        for r, size in enumerate(sizes):
            if rule == 'random':
                row = torch.randint(-1, num_clusters, (size, ), generator=g)
            elif rule == 'crossed':
                # blocks of 4: rank 0 holds 0..3, rank 1 holds 4..6
                low, high = (4, num_clusters) if r == 0 else (0, 4)
                row = torch.randint(low, high, (size, ), generator=g)
            else:  # 'repeats': P x 4 queries of the same clusters
                picks = torch.randperm(num_clusters, generator=g)[:size // 4]
                row = picks.repeat_interleave(4)
            labels[t, r, :size] = row
    return labels


def run_case(name, rank):
    num_clusters, sizes, mode, steps, rule = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    if num_clusters is None:
        num_clusters = int(torch.randint(3, 40, (1, ), generator=g))
    centroids = torch.randn(num_clusters, DIM, generator=g)
    labels = case_labels(rule, num_clusters, sizes, steps, g)
    world, width = labels.shape[1:]
    # sample_idx -> pseudo-label: one index per (step, rank, position)
    sample_labels = labels.flatten()
    replicated = build_head(update_mode=mode)
    sharded = build_head(update_mode=mode, sharded=True)
    for head in (replicated, sharded):
        head.reset(centroids, sample_labels)
    record = dict(num_clusters=num_clusters, steps=[])
    for t in range(steps):
        size = sizes[rank]
        first = (t * world + rank) * width
        samples = [dict(sample_idx=first + i) for i in range(size)]
        # near the clusters' centres, so that the top-1 is not always 0
        step_labels = labels[t, rank, :size]
        feats = centroids[step_labels.clamp(min=0)] + torch.randn(
            size,
            DIM,
            generator=torch.Generator().manual_seed(1000 * t + rank))
        step = {}
        for key, head in (('rep', replicated), ('sh', sharded)):
            x = feats.clone().requires_grad_()
            losses = head.loss(x, samples)
            losses['loss'].backward()
            step[key] = dict(
                loss=losses['loss'].detach(),
                acc=losses['acc'],
                grad=x.grad.clone())
        record['steps'].append(step)
    record['memory_rep'] = replicated.memory.clone()
    record['memory_sh_full'] = sharded.gather_memory(dst=None).clone()
    record['block'] = sharded.memory.clone()
    record['block_start'] = sharded._shard_start
    return record


def checkpoint_round_trip(out_dir, rank):
    """Rank 0 saves (after the collective prepare_state_dict), both ranks
    load; a stale copy is refused."""
    g = torch.Generator().manual_seed(5)
    centroids = torch.randn(9, DIM, generator=g)
    sample_labels = torch.randint(-1, 9, (40, ), generator=g)
    head = build_head(sharded=True)
    head.reset(centroids, sample_labels)
    feats = torch.randn(6, DIM, generator=torch.Generator().manual_seed(rank))
    samples = [dict(sample_idx=i + 10 * rank) for i in range(6)]
    head.loss(feats, samples)
    record = {}
    path = osp.join(out_dir, 'sharded_head.pth')
    head.prepare_state_dict()
    if rank == 0:
        state = head.state_dict()
        record['saved_keys'] = list(state)
        torch.save(state, path)
    else:
        try:
            head.state_dict()
            record['state_dict_off_rank0'] = 'saved'
        except RuntimeError:
            record['state_dict_off_rank0'] = 'refused'
    torch_dist.barrier()
    state = torch.load(path)
    fresh = build_head(sharded=True)
    fresh.load_state_dict(state)
    record['loaded_block_equal'] = torch.equal(fresh.memory, head.memory)
    record['loaded_labels_equal'] = torch.equal(fresh.sample_labels,
                                                head.sample_labels)
    record['loaded_num_clusters'] = fresh.num_clusters
    record['saved_memory'] = state['memory']
    record['gathered'] = head.gather_memory(dst=None)
    # the same checkpoint into a replicated head
    replicated = build_head()
    replicated.load_state_dict(state)
    record['replicated_loaded'] = replicated.memory.clone()
    # one more update: the copy gathered before it is stale
    head.loss(feats, samples)
    if rank == 0:
        try:
            head.state_dict()
            record['stale'] = 'saved'
        except RuntimeError:
            record['stale'] = 'refused'
    return record


class TinyModel(nn.Module):
    """A BatchNorm and a sharded cluster memory."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(DIM)
        self.head = build_head(sharded=True)

    def forward(self, x):
        return self.bn(x)


def hook_check(rank):
    """SyncNormBuffersHook averages the BatchNorm statistics of a DDP
    model and leaves the memory blocks alone; rank 0 can then save."""
    from mmcc.engine.hooks import SyncNormBuffersHook
    model = TinyModel()
    model.head.reset(
        torch.randn(7, DIM, generator=torch.Generator().manual_seed(2)),
        torch.arange(7))
    block = model.head.memory.clone()
    # by default DDP overwrites every buffer with rank 0's at
    # each forward; the memory block is not a buffer, so it stays
    ddp = DistributedDataParallel(model)  # syncs buffers at each forward
    ddp(torch.randn(4, DIM))
    record = dict(block_after_ddp=torch.equal(model.head.memory, block))
    with torch.no_grad():
        model.bn.running_mean.fill_(rank + 1.0)
        model.bn.running_var.fill_(10.0 * (rank + 1))
        model.bn.num_batches_tracked.fill_(4 * (rank + 1))
    SyncNormBuffersHook().after_train_epoch(SimpleNamespace(model=ddp))
    record.update(
        running_mean=model.bn.running_mean.clone(),
        running_var=model.bn.running_var.clone(),
        num_batches_tracked=int(model.bn.num_batches_tracked),
        block_after_hook=torch.equal(model.head.memory, block))
    if rank == 0:
        record['saved_memory'] = model.state_dict()['head.memory'].clone()
    return record


def main():
    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    torch_dist.init_process_group('gloo')
    rank = torch_dist.get_rank()
    results = {name: run_case(name, rank) for name in CASES}
    results['checkpoint'] = checkpoint_round_trip(out_dir, rank)
    results['hook'] = hook_check(rank)
    torch.save(results, osp.join(out_dir, f'rank{rank}.pt'))
    torch_dist.barrier()
    torch_dist.destroy_process_group()


if __name__ == '__main__':
    main()
