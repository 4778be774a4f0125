# Entry points on a fresh machine with Python >= 3.10 and Java >= 17:
#   make demo   create .venv, install, train the MNIST example and print its test accuracy
#   make test   create .venv, install the test extras, lint (ruff, mypy), run the whole test suite
#   make lint   ruff over the code and mypy over the sparkdl package (settings in pyproject.toml)
#   make docs   build the documentation site (mkdocs.yml, pages under docs/) into build/site;
#               --strict: a warning (broken link or anchor, a docstring griffe cannot read) fails it
#   make test-compat   the Spark tests in .venv-compat, on the oldest pyspark, numpy, pyarrow
#               and cloudpickle setup.cfg claims (each pinned to its lower bound's release series)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Extra pip requirements for the test environment, e.g. EXTRA_PIP="torch==2.13.0" to run the
# PyTorch reference comparisons (they are skipped when torch is absent).
EXTRA_PIP ?=

# The compat job's own venv, and its pins: every ">=" of setup.cfg's install_requires as
# "==<bound>.*", so the job always tests the oldest versions the package claims.
COMPAT_VENV ?= .venv-compat
COMPAT_PY   := $(COMPAT_VENV)/bin/python
COMPAT_PINS  = $(shell $(PYTHON) -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
    print(' '.join(chr(39) + r.strip().replace('>=', '==') + '.*' + chr(39) for r in c['options']['install_requires'].splitlines() if '>=' in r))")
# The tests that run Spark (classic sessions; Spark Connect needs pyspark 4) and those that
# check what imports pyspark.
COMPAT_TESTS ?= tests/spark tests/ml tests/engine/test_imports.py tests/engine/test_errors.py \
    tests/distributed/test_imports.py

.PHONY: demo test test-compat lint docs bench check-java clean FORCE

check-java:
	@full=$$(java -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1); \
	major=$${full%%.*}; [ "$$major" = "1" ] && major=$$(echo "$$full" | cut -d. -f2); \
	if [ -z "$$full" ]; then echo "sparkdl needs Java >= 17 for Spark, but no 'java' was found on PATH (install a JDK 17+, e.g. apt-get install openjdk-17-jdk-headless)"; exit 1; \
	elif [ "$$major" -lt 17 ] 2>/dev/null; then echo "sparkdl needs Java >= 17 for Spark, but 'java -version' reports $$full (install a JDK 17+ and put it first on PATH)"; exit 1; fi

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.examples-installed: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e ".[examples]"
	@touch $@

# Holds the EXTRA_PIP of the last install and is rewritten only when it changes, so that
# `make test EXTRA_PIP=...` after a plain `make test` installs the extras (and back again).
$(VENV)/.extra-pip: FORCE | $(PY)
	@printf '%s\n' '$(EXTRA_PIP)' | cmp -s - $@ || printf '%s\n' '$(EXTRA_PIP)' > $@

$(VENV)/.test-installed: $(PY) setup.cfg pyproject.toml $(VENV)/.extra-pip
	$(PY) -m pip install --quiet -e ".[test,examples]" $(EXTRA_PIP)
	@touch $@

demo: check-java $(VENV)/.examples-installed
	PYSPARK_PYTHON=$(CURDIR)/$(PY) PYSPARK_DRIVER_PYTHON=$(CURDIR)/$(PY) $(VENV)/bin/spark-submit \
	    --master "local[2]" --properties-file spark-defaults.conf examples/mnist_app.py --workers 2 --epochs 10

lint: $(VENV)/.test-installed
	$(PY) -m ruff check sparkdl tests benchmarks examples
	$(PY) -m mypy

$(VENV)/.docs-installed: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e ".[docs]"
	@touch $@

# The test extra holds the docs packages too, so `make test` builds the site.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

test: check-java lint docs
	$(PY) -m pytest

$(COMPAT_PY):
	$(PYTHON) -m venv $(COMPAT_VENV)

$(COMPAT_VENV)/.compat-installed: $(COMPAT_PY) setup.cfg pyproject.toml
	$(COMPAT_PY) -m pip install --quiet -e ".[test,examples]" $(COMPAT_PINS)
	@touch $@

test-compat: check-java $(COMPAT_VENV)/.compat-installed
	@$(COMPAT_PY) -c "import sys, pyspark, numpy, pyarrow, cloudpickle; print('test-compat: Python', \
	    sys.version.split()[0], 'pyspark', pyspark.__version__, 'numpy', numpy.__version__, 'pyarrow', \
	    pyarrow.__version__, 'cloudpickle', cloudpickle.__version__)"
	$(COMPAT_PY) -m pytest -p no:cacheprovider $(COMPAT_TESTS)

bench: $(VENV)/.test-installed
	$(PY) benchmarks/engine_vs_torch.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
