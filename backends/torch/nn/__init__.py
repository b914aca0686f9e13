"""The PyTorch modules: operations (:mod:`.ops`), the partial-channel mixed op (:mod:`.mixed`),
building blocks (:mod:`.blocks`: stem, head, resampling, fusion), cells (:mod:`.cells`), the
supernet (:mod:`.supernet`), the final network (:mod:`.network`), weight transfer between them
(:mod:`.transfer`) and the U-Net baseline (:mod:`.unet`)."""
