_base_ = './market1501.py'

# MSMT17 V1: train/, test/ and list_{train,val,query,gallery}.txt. The
# training split is list_train + list_val, as in the reference; 400
# iterations an epoch.
dataset_type = 'MSMT17'
data_root = 'data/msmt17/'
data_source = dict(type=dataset_type, data_root=data_root)
train_dataloader = dict(dataset=data_source, sampler=dict(iters_per_epoch=400))
cluster_dataloader = dict(dataset=data_source)
val_dataloader = dict(dataset=data_source)
test_dataloader = val_dataloader
