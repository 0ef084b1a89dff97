"""The ext_authz half of sidegate: Envoy's Authorization/Check service.

Pipeline stages, one module each: ``request_view`` (CheckRequest -> what we need of it),
``input_document`` (opa-envoy-plugin compatible policy input), ``identity`` (who is calling),
``policy`` (Rego decides), ``response`` (decision -> CheckResponse); ``service`` composes them.
"""
