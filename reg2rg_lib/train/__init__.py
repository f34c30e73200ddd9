"""Training: the generic loop and the Reg2RG wiring (Sec. III-D; notebook 03); samples come from `samples/`.

    loop.py         `fit`: accelerate loop, schedule, log, resumable atomic checkpoints (knows nothing of
                    Reg2RG)
    run.py          `train_run`: the profile's Reg2RG on the prep cache (`reg2rg train`)
    checkpoints.py  training-state checkpoints (`step-N/`, COMPLETE marker, keep-last)
    fast.py         the fast training path: the same loss as run.reg2rg_step for less work
                    (`reg2rg bench train-demo`)
    pretrain_vision.py  the CPU stand-in for RadFM's pretrained ViT3D (`reg2rg pretrain-vision`), train
                        split only
"""
