"""Central differences for the gradient checks (Chainer's check_backward in float64)."""
import numpy as np

EPS = 1e-6


def numeric_grad(f, a: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central difference of the scalar ``f()`` w.r.t. every entry of ``a`` (perturbed in place)."""
    assert a.flags.c_contiguous and a.dtype == np.float64
    flat = a.reshape(-1)
    grad = np.zeros(a.size, dtype=np.float64)
    for i in range(a.size):
        orig = flat[i]
        flat[i] = orig + eps
        fp = f()
        flat[i] = orig - eps
        fm = f()
        flat[i] = orig
        grad[i] = (fp - fm) / (2 * eps)
    return grad.reshape(a.shape)
