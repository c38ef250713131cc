"""Example agent package for ``configs/examples/text_stats.yaml``.

It lives outside the built-in ``agents`` package on purpose: the pipeline config makes it
importable with ``python_paths: [plugins]`` and allows it with
``allowed_modules: [text_stats_example]``. Nothing else in the runtime knows about it.
"""
