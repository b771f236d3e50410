"""Function-preserving widening: the split rule that makes a unit's two children
(``split_rule``) and the new model and weights (``widening``).
"""
