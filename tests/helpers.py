"""Models the Spark tests share."""
import sparkdl
from sparkdl.engine import optimizers, zoo


def compiled_mlp(seed=0, lr=0.05):
    """The MNIST MLP (784-256-128-10), SGD with momentum 0.9, accuracy as its metric."""
    sparkdl.set_random_seed(seed)
    model = zoo.mlp()
    model.compile(optimizers.SGD(lr, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
