"""The whole Retail Pulse service on one machine, read from template.yaml.

`python -m local_stack` (or `make run`) starts the AWS emulators (DynamoDB Local, MiniStack)
with the template's resources,
function workers, API Gateway, SQS pollers and schedules. Kept free of imports: function
workers import `local_stack.worker` and must start with a clean module namespace.
"""
