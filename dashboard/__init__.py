"""The Streamlit dashboard for compliance reviewers and approvers (``streamlit run
dashboard/app.py``, or started by ``controlplane serve``). It talks only to the HTTP API."""
