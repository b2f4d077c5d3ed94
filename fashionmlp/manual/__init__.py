"""NumPy backpropagation, written to be read next to the maths and checked against torch.autograd.

`from fashionmlp import manual` gives the functions below; only the cross-check imports torch.
"""

from fashionmlp.manual.crosscheck import crosscheck
from fashionmlp.manual.functional import (
                                          cross_entropy,
                                          cross_entropy_grad,
                                          log_softmax,
                                          log_softmax_backward,
                                          logistic_loss,
                                          logistic_loss_grad,
                                          margin_logistic_loss,
                                          margin_logistic_loss_grad,
                                          one_hot,
                                          relu,
                                          relu_grad,
                                          sigmoid,
                                          sigmoid_grad,
                                          softmax,
                                          softmax_backward,
                                          squared_error,
                                          squared_error_grad,
                                          stable_logistic_loss,
                                          stable_logistic_loss_grad,
                                          tanh,
                                          tanh_grad,
)
from fashionmlp.manual.gradcheck import check_network, gradcheck, numerical_grad, relative_error
from fashionmlp.manual.mlp import MLP

__all__ = [
    "MLP", "check_network", "cross_entropy", "cross_entropy_grad", "crosscheck", "gradcheck", "log_softmax",
    "log_softmax_backward", "logistic_loss", "logistic_loss_grad", "margin_logistic_loss",
    "margin_logistic_loss_grad", "numerical_grad", "one_hot", "relative_error", "relu", "relu_grad", "sigmoid",
    "sigmoid_grad", "softmax", "softmax_backward", "squared_error", "squared_error_grad", "stable_logistic_loss",
    "stable_logistic_loss_grad", "tanh", "tanh_grad",
]
