"""The model zoo: the field's CT foundation models, one module per family (each registers its encoders
and their random-init controls), the zoo's shared machinery (:mod:`._zoo`: recipes, model cards, the
encoder wrapper; :mod:`._load`: audited checkpoint loading; :mod:`._weights`: pinned downloads) and the
catalogue the CLI and the demo list (:mod:`.catalog`). Networks live in :mod:`._nets`.

A new zoo family is one module here."""
