# Ablations: the instance-level memory baseline (SpCL's memory without its
# un-clustered instances) instead of the cluster memory: one entry per
# training image, initialised from the clustering pass's embeddings and
# momentum-updated per image (m = 0.2, SpCL's value, the weight on the old
# entry); each cluster's prototype is the mean of its members' entries; the
# same ClusterNCE at the same temperature.
_base_ = './_base_/ablation_12e.py'
model = dict(
    head=dict(
        _delete_=True,
        type='InstanceMemoryHead',
        momentum=0.2,
        temperature=0.05,
        loss=dict(type='ClusterNCELoss')))
