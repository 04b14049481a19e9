"""What ``search``, ``trainables`` and ``ensemble`` share: output root, atomic writes, metrics, MLflow, errors.

Needs only the standard library and numpy (MLflow and scikit-learn are imported lazily where a
function needs them); never torch, Ray or timm, so ``ensemble`` can import it anywhere.
"""
