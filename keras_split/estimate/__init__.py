"""Splitting eigenpairs: the smallest eigenvalue and its eigenvector of every
neuron's splitting matrix, from auxiliary-activation products ``S v``
(``products``; iterated by ``lobpcg`` or ``rmsprop``) or from the exact matrices
(``exact``, small nets).
"""
