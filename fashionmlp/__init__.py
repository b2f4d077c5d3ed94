"""fashionmlp: neural-network experiments on Fashion-MNIST, from NumPy backprop to optimizer studies."""

__version__ = "0.1.0"
