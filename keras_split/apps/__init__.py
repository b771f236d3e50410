"""What users run: export (SavedModel, TFLite), the HTML report, recipes, the
digits demo and the ``keras-split`` command line.
"""
