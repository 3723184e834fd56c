"""The example participants of DESIGN.md, written with the public participant API only.

`saga participants` runs them all in one process (`saga participant participants:EXAMPLES`).
"""

from participants.experiments import experiments
from participants.inventory import inventory
from participants.metrics import metrics
from participants.notifications import notifications
from participants.orders import orders
from participants.payments import payments
from participants.resources import resources
from participants.workers import workers

EXAMPLES = [orders, inventory, payments, notifications, experiments, resources, metrics, workers]

__all__ = ["EXAMPLES"]
