#!/bin/sh
# Creates the Iceberg warehouse bucket and the pipeline's own S3 user, limited
# to that bucket, so Airflow and Spark never hold MinIO's root credentials.
# Every step is safe to repeat: the stack runs this on each `up`.
#
# Environment: MINIO_URL, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, ICEBERG_BUCKET,
# ICEBERG_S3_ACCESS_KEY, ICEBERG_S3_SECRET_KEY.
set -eu

: "${MINIO_URL:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${ICEBERG_BUCKET:?}" "${ICEBERG_S3_ACCESS_KEY:?}" "${ICEBERG_S3_SECRET_KEY:?}"

policy_name=cdc-warehouse
policy_file=/tmp/cdc-warehouse-policy.json

mc alias set store "${MINIO_URL}" "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}" >/dev/null
mc mb --ignore-existing "store/${ICEBERG_BUCKET}"

# Iceberg's S3FileIO lists, reads, writes and deletes objects (snapshot
# expiry, orphan cleanup) and uses multipart uploads for large data files.
cat >"${policy_file}" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::${ICEBERG_BUCKET}"]
    },
    {
      "Effect": "Allow",
      "Action": [
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
        "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"
      ],
      "Resource": ["arn:aws:s3:::${ICEBERG_BUCKET}/*"]
    }
  ]
}
EOF
mc admin policy create store "${policy_name}" "${policy_file}"
mc admin user add store "${ICEBERG_S3_ACCESS_KEY}" "${ICEBERG_S3_SECRET_KEY}"
# Attaching a policy that is already attached is an error for mc, so look
# first (with shell matching: the mc image has no grep).
case "$(mc admin user info store "${ICEBERG_S3_ACCESS_KEY}")" in
    *"${policy_name}"*) ;;
    *) mc admin policy attach store "${policy_name}" --user "${ICEBERG_S3_ACCESS_KEY}" ;;
esac
echo "create-bucket: s3://${ICEBERG_BUCKET} ready for ${ICEBERG_S3_ACCESS_KEY}"
