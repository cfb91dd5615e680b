_base_ = './market1501.py'

# Same layout, naming and image size as Market-1501.
data_source = dict(type='DukeMTMCReID', data_root='data/dukemtmc-reid/')
train_dataloader = dict(dataset=data_source)
cluster_dataloader = dict(dataset=data_source)
val_dataloader = dict(dataset=data_source)
test_dataloader = val_dataloader
