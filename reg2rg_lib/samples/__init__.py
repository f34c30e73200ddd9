"""Samples: one cached case -> the model's inputs, batched and on the device (shared by training and
inference).

    vision_inputs.py  which prep-cache tensors a model config reads and how they become the encoders' inputs
    dataset.py        `ReportDataset`: cached case -> prompt and RRA target (region shuffling, region dropout)
    collate.py        `Collator`: batching of samples and their visual tensors, `model_inputs`
    features.py       the frozen-ViT feature cache (the frozen encoder runs once per case),
                      `use_feature_cache`
    device.py         `to_device` (batches onto a device) and `batch_names` (a batch's cases, for errors)
    inputs.py         `ensure_inputs`: the profile folder's prep cache and tokenizer, before training
                      (`ensure_inputs_once` under torchrun; `check_inputs`: what training reads)
    reference.py      each organ's average inputs over the train cases, the reference that image-contrastive
                      decoding (`generate.image_contrast`) compares a case's own inputs with

It sits between the model (which it builds inputs for) and the stages that run the model: train and infer.
"""
