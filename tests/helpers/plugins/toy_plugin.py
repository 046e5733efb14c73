"""Plugin file for CLI tests: ``saliencybench run --plugin tests/helpers/plugins/toy_plugin.py ...``

(with ``tests/`` on PYTHONPATH: :func:`helpers.subprocess_env`)."""


from helpers.toy import register_all

register_all()
