"""The neutral base of moodlens: errors, asset resolution, YAML -> options dataclasses, shared
constants and the typed stream items. It imports nothing else of moodlens and no torch, so every
layer above (models < realtime < train) may use it and `moodlens --help` stays light.
"""
