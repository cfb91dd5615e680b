# Adam, lr 3.5e-4, weight decay 5e-4, x0.1 every 20 epochs, 50 epochs,
# evaluation every 10 epochs.
optim_wrapper = dict(optimizer=dict(type='Adam', lr=3.5e-4, weight_decay=5e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[20, 40], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=10)
val_cfg = dict()
test_cfg = dict()
