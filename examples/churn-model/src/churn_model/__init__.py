"""An example ML project whose stages run as a modelship ModelPipeline.

Each stage is a module run as `python3 -m churn_model.<stage>`: checks, validate, train,
evaluate and integration. See README.md.
"""
