"""The operator verbs, built on every stage below: plan, rollback, promote, switch-back, compare
and gates, runbook, audit, doctor.
"""
