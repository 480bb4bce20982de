//! The image a host boots: the spec's `imageId`, or the latest Debian 12 AMI that AWS publishes
//! as a public SSM parameter for the instance type's architecture.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{ArchitectureType, ArchitectureValues};

use super::AwsCloud;
use super::error::{classify, has_code};
use crate::cloud::{CloudError, InstanceSettings};

/// How long a resolved default AMI is reused before the parameter is read again.
const IMAGE_CACHE_TTL: Duration = Duration::from_secs(3600);

/// CPU architecture of an instance type and of the image it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Architecture {
    Amd64,
    Arm64,
}

impl Architecture {
    /// A guess from the type's name, for when DescribeInstanceTypes cannot answer: Graviton
    /// families carry a `g` right after the generation (`m7g`, `c6gn`, `r8gd`, `im4gn`), and
    /// `a1` is the first Graviton. `g5` or `g4dn` (GPU, x86) do not match.
    pub fn guess(instance_type: &str) -> Self {
        let family = instance_type.split('.').next().unwrap_or_default();
        if family == "a1" {
            return Architecture::Arm64;
        }
        let after_prefix = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let attributes = after_prefix.trim_start_matches(|c: char| c.is_ascii_digit());
        if after_prefix.len() > attributes.len() && attributes.starts_with('g') {
            Architecture::Arm64
        } else {
            Architecture::Amd64
        }
    }

    fn of_instance_type(supported: &[ArchitectureType]) -> Option<Self> {
        if supported.contains(&ArchitectureType::X8664) {
            Some(Architecture::Amd64)
        } else if supported.contains(&ArchitectureType::Arm64) {
            Some(Architecture::Arm64)
        } else {
            None
        }
    }

    fn of_image(architecture: &ArchitectureValues) -> Option<Self> {
        match architecture {
            ArchitectureValues::X8664 => Some(Architecture::Amd64),
            ArchitectureValues::Arm64 => Some(Architecture::Arm64),
            _ => None,
        }
    }

    /// `amd64` or `arm64`, as Debian names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Amd64 => "amd64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// SSM parameters whose value is the default AMI id, per architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageParameters {
    pub amd64: String,
    pub arm64: String,
}

impl Default for ImageParameters {
    /// AWS's public parameters for the latest Debian 12 images.
    fn default() -> Self {
        Self {
            amd64: "/aws/service/debian/release/12/latest/amd64".into(),
            arm64: "/aws/service/debian/release/12/latest/arm64".into(),
        }
    }
}

impl ImageParameters {
    fn for_architecture(&self, architecture: Architecture) -> &str {
        match architecture {
            Architecture::Amd64 => &self.amd64,
            Architecture::Arm64 => &self.arm64,
        }
    }
}

/// The image of a launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LaunchImage {
    pub image_id: String,
    /// The image's root device name: the root volume's mapping must use it, or EC2 would add
    /// an extra volume instead of sizing and encrypting the root.
    pub root_device: String,
}

/// Default images already resolved, per architecture.
#[derive(Debug, Default)]
pub(crate) struct ImageCache(Mutex<HashMap<Architecture, (String, Instant)>>);

impl ImageCache {
    fn get(&self, architecture: Architecture) -> Option<String> {
        let cache = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.get(&architecture).filter(|(_, at)| at.elapsed() < IMAGE_CACHE_TTL).map(|(id, _)| id.clone())
    }

    fn put(&self, architecture: Architecture, image_id: &str) {
        let mut cache = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.insert(architecture, (image_id.to_string(), Instant::now()));
    }
}

impl AwsCloud {
    /// The image to launch for these settings, checked to exist and to fit the instance type.
    pub(crate) async fn launch_image(&self, settings: &InstanceSettings) -> Result<LaunchImage, CloudError> {
        let architecture = self.architecture(&settings.instance_type).await?;
        let image_id = match settings.image_id.as_deref().filter(|id| !id.is_empty()) {
            Some(image_id) => image_id.to_string(),
            None => self.default_image(architecture).await?,
        };
        let images = self
            .retry(|| self.ec2.describe_images().image_ids(&image_id).send())
            .await
            .map_err(|error| classify("ec2", "describe image", &error))?;
        let Some(image) = images.images().first() else {
            return Err(CloudError::InvalidSpec(format!(
                "image {image_id} does not exist or is not visible to this account: check spec.instance.imageId"
            )));
        };
        let image_architecture = image.architecture().and_then(Architecture::of_image);
        if image_architecture.is_some_and(|image_architecture| image_architecture != architecture) {
            return Err(CloudError::InvalidSpec(format!(
                "image {image_id} is built for {} but instance type {} needs {}: choose a matching \
                 spec.instance.imageId or instanceType",
                image_architecture.map_or("another architecture", Architecture::as_str),
                settings.instance_type,
                architecture.as_str()
            )));
        }
        let root_device = image.root_device_name().unwrap_or("/dev/xvda").to_string();
        Ok(LaunchImage { image_id, root_device })
    }

    /// The instance type's architecture from DescribeInstanceTypes, or a guess from its name
    /// when the call is not allowed or not answered.
    pub(crate) async fn architecture(&self, instance_type: &str) -> Result<Architecture, CloudError> {
        let result =
            self.retry(|| self.ec2.describe_instance_types().instance_types(instance_type.into()).send()).await;
        match result {
            Ok(output) => {
                let supported = output
                    .instance_types()
                    .first()
                    .and_then(|info| info.processor_info())
                    .map(|cpu| cpu.supported_architectures());
                Ok(supported
                    .and_then(Architecture::of_instance_type)
                    .unwrap_or_else(|| Architecture::guess(instance_type)))
            }
            Err(error) if has_code(&error, "InvalidInstanceType") => Err(CloudError::InvalidSpec(format!(
                "spec.instance.instanceType {instance_type:?} is not an EC2 instance type offered in this region"
            ))),
            Err(error) => {
                let guess = Architecture::guess(instance_type);
                tracing::warn!(error = %classify("ec2", "describe instance type", &error), instance_type,
                    architecture = guess.as_str(), "guessing the architecture from the instance type's name");
                Ok(guess)
            }
        }
    }

    /// The default image of an architecture, read from its SSM parameter (cached for an hour).
    async fn default_image(&self, architecture: Architecture) -> Result<String, CloudError> {
        if let Some(image_id) = self.images.get(architecture) {
            return Ok(image_id);
        }
        let name = self.options.image_parameters.for_architecture(architecture);
        let output = self.retry(|| self.ssm.get_parameter().name(name).send()).await.map_err(|error| {
            if error.as_service_error().is_some_and(|error| error.is_parameter_not_found()) {
                CloudError::InvalidSpec(format!(
                    "no default image: SSM parameter {name} does not exist in this region; set spec.instance.imageId"
                ))
            } else {
                classify("ssm", "read the default image parameter", &error)
            }
        })?;
        let image_id = output.parameter().and_then(|parameter| parameter.value()).unwrap_or_default();
        if !image_id.starts_with("ami-") {
            return Err(CloudError::Permanent {
                action: "read the default image parameter",
                message: format!("SSM parameter {name} holds {image_id:?}, not an AMI id"),
            });
        }
        self.images.put(architecture, image_id);
        Ok(image_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_families_are_guessed_arm64_and_others_amd64() {
        for arm in ["m7g.large", "c6gn.xlarge", "r8gd.2xlarge", "t4g.micro", "im4gn.large", "x2gd.medium", "a1.large"] {
            assert_eq!(Architecture::guess(arm), Architecture::Arm64, "{arm}");
        }
        for x86 in ["m7i.large", "t3.medium", "g5.xlarge", "g4dn.xlarge", "c5n.large", "r6id.large", "mac1.metal"] {
            assert_eq!(Architecture::guess(x86), Architecture::Amd64, "{x86}");
        }
    }

    #[test]
    fn the_default_parameters_are_awss_public_debian_12_ones() {
        let parameters = ImageParameters::default();
        assert_eq!(parameters.for_architecture(Architecture::Amd64), "/aws/service/debian/release/12/latest/amd64");
        assert_eq!(parameters.for_architecture(Architecture::Arm64), "/aws/service/debian/release/12/latest/arm64");
    }
}
