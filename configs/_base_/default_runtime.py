default_scope = 'mmcc'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # keep the best checkpoint by the re-ID metric's mAP; written through a
    # rename, so a run killed at any moment resumes from a complete one
    checkpoint=dict(
        type='AtomicCheckpointHook',
        interval=10,
        max_keep_ckpts=2,
        save_best='reid/mAP',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # DDP leaves every rank its own BatchNorm statistics; average them after
    # each epoch, so the next clustering pass, which embeds one shard per
    # rank, embeds all shards with the same model. Unlike mmengine's
    # SyncBuffersHook it leaves the cluster memory alone (consistent by
    # construction; with sharded=True, one block per rank) and collects a
    # sharded memory for the checkpoint that rank 0 saves next
    sync_buffers=dict(type='SyncNormBuffersHook'),
    # stop at the first NaN/Inf loss, naming the epoch and iteration
    non_finite_loss=dict(type='NonFiniteLossHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # no backend named: tools/train.py and tools/test.py pick nccl where
    # CUDA is available and gloo elsewhere (mmcc.utils.setup_distributed)
    dist_cfg=dict(timeout=1800),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ReIDVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
# the published runs use seed 1
randomness = dict(seed=1, deterministic=False)
