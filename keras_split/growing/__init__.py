"""The growing loop: GrowingModel (grow = estimate, select, split, guard), the
stage record, the fit callback, schedules with a run directory, twins.
"""
