"""Inference: any trained network as noisy → clean. :class:`~r3l.inference.denoiser.Denoiser` (the inference rule
of a spec, tiling, the self-ensemble; ``open_denoiser``, the one way to get one), the engines that run it
(PyTorch, ONNX Runtime) and the export of its whole inference as one program."""
