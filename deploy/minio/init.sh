#!/bin/sh
# One-shot MinIO setup for the compose stack, run by the minio-init service (minio/mc image; idempotent):
#  - the backup bucket, with versioning so an overwritten or deleted artifact stays recoverable;
#  - the mirror bucket (APPSVC_DR_MIRROR_BUCKET) with Object Lock, which the mirror worker copies every object to;
#  - a worker account limited to those buckets, so the workers never hold MinIO's root credentials.
# Plain POSIX sh on purpose: the mc image has a shell but few other tools.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${APPSVC_DR_STORE__S3_ACCESS_KEY:?}" "${APPSVC_DR_STORE__S3_SECRET_KEY:?}"
BUCKET="${APPSVC_DR_STORE__S3_BUCKET:-appservice-dr}"
USER="$APPSVC_DR_STORE__S3_ACCESS_KEY"

mc alias set dr "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
MIRROR="${APPSVC_DR_MIRROR_BUCKET:-appservice-dr-mirror}"
mc mb --ignore-existing "dr/$BUCKET"
mc version enable "dr/$BUCKET"
mc mb --ignore-existing --with-lock "dr/$MIRROR"     # Object Lock (and so versioning) only at creation

cat > /tmp/appsvc-dr-worker-policy.json <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads",
                "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"],
     "Resource": ["arn:aws:s3:::$BUCKET", "arn:aws:s3:::$MIRROR"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject",
                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
                "s3:GetObjectTagging", "s3:PutObjectTagging", "s3:GetObjectRetention",
                "s3:PutObjectRetention"],
     "Resource": ["arn:aws:s3:::$BUCKET/*", "arn:aws:s3:::$MIRROR/*"]}
  ]
}
POLICY
mc admin policy create dr appsvc-dr-worker /tmp/appsvc-dr-worker-policy.json
mc admin user add dr "$USER" "$APPSVC_DR_STORE__S3_SECRET_KEY"
# `policy attach` fails if the policy is already attached (a re-run), so attach only when missing.
case "$(mc admin user info dr "$USER")" in
  *appsvc-dr-worker*) ;;
  *) mc admin policy attach dr appsvc-dr-worker --user "$USER" ;;
esac
echo "minio-init: buckets $BUCKET, $MIRROR (Object Lock) and user $USER are ready"
