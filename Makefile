# dbfleet: `make demo` runs the embedded demo, `make test` runs the test suite.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test test-setup bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dbfleet demo

# The Debian packages in scripts/test-packages.txt and the machine's PostgreSQL and MariaDB.
test-setup:
	@scripts/test-setup

test: test-setup $(STAMP)
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/sweep.py

clean:
	rm -rf $(VENV) .dbfleet
