_base_ = './market1501.py'

# MSMT17 V1: train/, test/ and list_{train,val,query,gallery}.txt. The
# training split is list_train + list_val, as in the reference; 400
# iterations an epoch.
data_source = dict(type='MSMT17', data_root='data/msmt17/')
train_dataloader = dict(
    dataset=data_source, sampler=dict(iters_per_epoch=400))
cluster_dataloader = dict(dataset=data_source)
val_dataloader = dict(dataset=data_source)
test_dataloader = val_dataloader
