"""Evaluation: image-quality metrics and the two ``realsr eval`` forms, beside the engine.

``metrics`` (PSNR/SSIM with BasicSR's conventions, codebook accuracy), ``niqe`` (no-reference),
``lpips`` and ``dists`` (learned, weights from the registry cache; ``vgg_metric`` loads both),
``pairs`` (a model over LR/HR pairs: upscale, then score) and ``folders`` (SR images already made,
against HR images or alone), ``common`` (what both forms share). Evaluation uses the engine (it
runs models, reads images) and the registry; the engine never imports it.
"""
