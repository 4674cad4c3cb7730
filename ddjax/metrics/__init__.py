"""Metrics of representations, as functions of one member's arrays that vmap over members: neural collapse
(collapse.py) and centred kernel alignment (similarity.py). Weight norms live with the train step (train.py)."""

from ddjax.metrics.collapse import class_means, neural_collapse
from ddjax.metrics.similarity import debiased_cka, hsic_unbiased, linear_cka, minibatch_cka, rbf_cka, rbf_kernel

__all__ = ['class_means', 'neural_collapse', 'debiased_cka', 'hsic_unbiased', 'linear_cka', 'minibatch_cka',
           'rbf_cka', 'rbf_kernel']
