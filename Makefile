# Everything a fresh clone needs, from nothing but Python >= 3.11, make and git.
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser pango test lint demo serve bench clean

install: $(STAMP)

# uv is bootstrapped inside the venv with pip, then installs exactly what uv.lock pins.
$(STAMP): pyproject.toml uv.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --frozen --inexact --quiet
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The admin page's test drives Debian's Chromium through Playwright (Playwright's own browser
# downloads are not used). Installed only when absent; the package lists are refreshed only
# when a first try fails, as on a fresh machine that never ran apt-get update.
CHROMIUM := /usr/bin/chromium
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

browser:
	@test -x $(CHROMIUM) || $(APT_INSTALL) || { apt-get update && $(APT_INSTALL); }
	@test -x $(CHROMIUM) || { echo "make browser: $(CHROMIUM) is still missing" >&2; exit 1; }

test: lint browser
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	$(VENV)/bin/invoicehook demo

serve: $(STAMP)
	$(VENV)/bin/invoicehook serve

# bench/render.py sets WeasyPrint beside Typst; WeasyPrint needs Debian's Pango, installed
# the same way when absent. Without it the benchmarks still run and that row says why.
PANGO := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0
PANGO_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(PANGO)
PANGO_PRESENT := dpkg -s $(PANGO) >/dev/null 2>&1

pango:
	@$(PANGO_PRESENT) || $(PANGO_INSTALL) || { apt-get update && $(PANGO_INSTALL); } \
		|| echo "make pango: $(PANGO) could not be installed; no WeasyPrint comparison" >&2

bench: $(STAMP) pango
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV) var
