_base_ = './market1501.py'

# Same layout, naming and image size as Market-1501.
dataset_type = 'DukeMTMCReID'
data_root = 'data/dukemtmc-reid/'
data_source = dict(type=dataset_type, data_root=data_root)
train_dataloader = dict(dataset=data_source)
cluster_dataloader = dict(dataset=data_source)
val_dataloader = dict(dataset=data_source)
test_dataloader = val_dataloader
