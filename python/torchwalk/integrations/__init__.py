"""Ready-made callbacks for training frameworks, imported only when used.

``torchwalk.integrations.lightning.StatsMonitor`` is a Lightning callback,
``torchwalk.integrations.transformers.StatsCallback`` a transformers
``TrainerCallback``; neither Lightning nor transformers is a dependency of
torchwalk: importing one of these modules needs its framework installed.
"""
