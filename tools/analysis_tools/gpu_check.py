"""Exercise mmcc's CUDA paths; one line per path, non-zero exit on failure.

Machines without a GPU never run these paths, so this script is what a
developer runs the day a GPU is at hand (``tools/analysis_tools/
gpu_check.sh`` runs it together with the CUDA-marked and distributed
tests)::

    python tools/analysis_tools/gpu_check.py

Each check compares the CUDA result with the CPU one:

- ``faiss-gpu``: the exact kNN of :func:`mmcc.clustering.knn_search`
  through a faiss GPU index, against torch's search on the CPU;
- ``amp``: two training steps of a ReID model with ``--amp``'s optimiser
  wrapper (float16 autocast, loss scaling) and the cluster memory on the
  GPU;
- ``memory-update``: :func:`mmcc.models.functional.momentum_update` on the
  GPU against the CPU, mean and hard modes;
- ``evaluation``: :func:`mmcc.evaluation.functional.rank_metrics` on GPU
  tensors against NumPy arrays.
"""
import sys
import time
import traceback
import warnings

import numpy as np
import torch


def check_faiss_gpu():
    from mmcc.clustering import knn as knn_module
    if knn_module._faiss_gpu_count() == 0:
        raise RuntimeError('faiss has no GPU: pip install faiss-gpu '
                           '(instead of faiss-cpu)')
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((3000, 128)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a CPU fallback warns: fail on it
        ids, sims = knn_module.knn_search(
            feats, 20, method='exact', backend='faiss')
    ref_ids, ref_sims = knn_module.knn_search(
        feats, 20, method='exact', backend='torch')
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert (ids == ref_ids).mean() > 0.999, 'neighbour lists differ'
    return f'3000 x 128, k=20: {(ids == ref_ids).mean():.4f} of ids equal'


def check_amp():
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.structures import DataSample

    from mmcc.engine.optimizers import amp_optim_wrapper
    from mmcc.registry import MODELS
    from mmcc.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(
        dict(
            type='ReIDModel',
            backbone=dict(
                type='mmpretrain.ResNet', depth=18, out_indices=(3, )),
            neck=dict(type='BNNeck'),
            head=dict(type='ClusterMemoryHead'))).cuda()
    wrapper_cfg = amp_optim_wrapper(
        dict(optimizer=dict(type='Adam', lr=3.5e-4)))
    assert wrapper_cfg['type'] == 'AmpOptimWrapper', wrapper_cfg
    optim_wrapper = build_optim_wrapper(model, wrapper_cfg)
    model.head.reset(torch.randn(4, 512), torch.arange(16) % 4)
    samples = [DataSample(metainfo=dict(sample_idx=i)) for i in range(16)]
    before = model.backbone.conv1.weight.detach().clone()
    for _ in range(2):
        inputs = torch.randn(16, 3, 128, 64, device='cuda')
        with optim_wrapper.optim_context(model):
            losses = model(inputs, samples, mode='loss')
        optim_wrapper.update_params(losses['loss'])
    loss = float(losses['loss'])
    assert np.isfinite(loss), loss
    memory = model.head.memory
    assert memory.is_cuda and memory.dtype == torch.float32
    torch.testing.assert_close(
        memory.norm(dim=1), torch.ones(4, device='cuda'))
    assert not torch.equal(before, model.backbone.conv1.weight)
    return f'2 steps, loss {loss:.3f}, memory float32 on cuda'


def check_memory_update():
    from mmcc.models.functional import momentum_update
    gen = torch.Generator().manual_seed(0)
    memory = torch.nn.functional.normalize(
        torch.randn(50, 64, generator=gen), dim=1)
    queries = torch.nn.functional.normalize(
        torch.randn(256, 64, generator=gen), dim=1)
    labels = torch.randint(-1, 50, (256, ), generator=gen)
    for mode in ('mean', 'hard'):
        cpu, gpu = memory.clone(), memory.cuda()
        momentum_update(cpu, queries, labels, 0.1, mode)
        momentum_update(gpu, queries.cuda(), labels.cuda(), 0.1, mode)
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
    return 'mean and hard modes equal the CPU to 1e-5'


def check_evaluation():
    from mmcc.evaluation.functional import rank_metrics
    rng = np.random.default_rng(0)
    dist = rng.random((40, 300)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, 20, 40), rng.integers(0, 20, 300)
    q_cams, g_cams = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    cpu = rank_metrics(dist, q_ids, g_ids, q_cams, g_cams)
    gpu = rank_metrics(*(torch.as_tensor(a).cuda()
                         for a in (dist, q_ids, g_ids, q_cams, g_cams)))
    for key, value in cpu.items():
        assert abs(gpu[key] - value) <= 1e-6, (key, value, gpu[key])
    return f'mAP {cpu["mAP"]:.4f} on both'


CHECKS = dict(
    faiss_gpu=check_faiss_gpu,
    amp=check_amp,
    memory_update=check_memory_update,
    evaluation=check_evaluation)


def main() -> int:
    if not torch.cuda.is_available():
        print('FAIL cuda: no CUDA device visible to torch')
        return 1
    print(f'cuda: {torch.cuda.device_count()} x '
          f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}')
    failed = 0
    for name, check in CHECKS.items():
        start = time.time()
        try:
            detail = check()
            print(f'ok   {name}: {detail} ({time.time() - start:.1f} s)')
        except Exception:
            failed += 1
            print(f'FAIL {name}:')
            traceback.print_exc(file=sys.stdout)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
