"""Metrics of representations and of the loss surface, as functions of one member's arrays that vmap over members:
neural collapse (collapse.py), centred kernel alignment (similarity.py), Hessian and gradient noise (curvature.py),
deep linear networks' mode strengths and layer imbalance (linear.py).
Weight norms live with the train step (train.py)."""

from ddjax.metrics.collapse import class_means, neural_collapse
from ddjax.metrics.curvature import gradient_noise, hutchinson_trace, hvp, top_hessian_eigenvalue
from ddjax.metrics.linear import end_to_end, imbalance, input_output_modes, mode_strengths
from ddjax.metrics.similarity import debiased_cka, hsic_unbiased, linear_cka, minibatch_cka, rbf_cka, rbf_kernel

__all__ = ['class_means', 'neural_collapse', 'gradient_noise', 'hutchinson_trace', 'hvp', 'top_hessian_eigenvalue',
           'end_to_end', 'imbalance', 'input_output_modes', 'mode_strengths',
           'debiased_cka', 'hsic_unbiased', 'linear_cka', 'minibatch_cka', 'rbf_cka', 'rbf_kernel']
