"""The whole Retail Pulse service on one machine, read from template.yaml.

`python -m local_stack` (or `make run`) starts moto, the template's tables and queues,
function workers, API Gateway, SQS pollers and schedules. Kept free of imports: function
workers import `local_stack.worker` and must start with a clean module namespace.
"""
