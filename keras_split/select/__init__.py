"""What to split under a budget: FLOPs and parameter costs per neuron
(``flops``, ``costs``) and the exact knapsack over the candidates (``knapsack``).
"""
